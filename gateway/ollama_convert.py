"""Ollama request bodies -> Runner/Store/Distribution gRPC requests, and their answers -> Ollama's JSON
(api/types.go). Pure functions: the routes (gateway/ollama_routes.py) make the calls and time them."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from modelrunner.common.names import InvalidReference, Reference, is_digest, parse_reference
from modelrunner.gateway.errors import APIError
from modelrunner.gateway.openai_convert import token_logprobs
from modelrunner.gateway.ollama_models import ChatRequest, GenerateRequest, GeneratingFields, Message, Options
from modelrunner.v1 import runner_pb2, types_pb2

# The Ollama release whose API (docs/api.md, api/types.go) these routes follow; clients gate features on it.
OLLAMA_API_VERSION = "0.33.0"
NEVER = "2318-01-01T00:00:00Z"  # where Ollama's "forever" keep_alive lands (now + the longest Go duration)
DONE_REASONS = {"stop": "stop", "length": "length", "tool_calls": "stop"}
_LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp()  # the last second a datetime holds


@dataclass(frozen=True)
class ModelName:
    typed: str  # as the client sent it: answers echo it, as Ollama's do
    qualified: str  # what the services get: "docker.io/ai/gemma3:latest" or "sha256:..."


def resolve(name: str, field_name: str = "model") -> ModelName:
    """An Ollama model name as Docker Model Runner resolves it: `gemma3` and `gemma3:270m` are
    `docker.io/ai/gemma3:latest` and `...:270m`, `ai/gemma3` the same; 400 naming the field if invalid."""
    if is_digest(name):
        return ModelName(name, name)
    try:
        return ModelName(name, str(parse_reference(name)))
    except InvalidReference as exc:
        raise APIError(400, f"{field_name}: {exc}", param=field_name) from None


def destination(name: str, field_name: str = "destination") -> Reference:
    """The new name of /api/copy and /api/create: a tag (`ai/gemma3:backup`, `gemma3-backup`), never a digest."""
    try:
        ref = parse_reference(name)
    except InvalidReference as exc:
        raise APIError(400, f"{field_name}: {exc}", param=field_name) from None
    if ref.digest:
        raise APIError(400, f'{field_name} "{name}" is invalid: give a name and tag, not a digest', param=field_name)
    return ref


def display_name(qualified: str) -> str:
    """How /api/tags and /api/ps name a model: `ai/gemma3:latest`, `host:5000/team/model:v1`."""
    try:
        return parse_reference(qualified).familiar
    except InvalidReference:
        return qualified


def now_rfc3339() -> str:
    return rfc3339(time.time())


def rfc3339(unix: float) -> str:
    """`unix` as RFC 3339, clamped to what a datetime holds (1970 to 9999): a stray time (an expiry the
    Runner computed from a huge keep_alive, a corrupt record) must not fail a whole listing."""
    clamped = 0.0 if math.isnan(unix) else min(max(unix, 0.0), _LATEST)
    return datetime.fromtimestamp(clamped, timezone.utc).isoformat().replace("+00:00", "Z")


def not_found(name: str, *, pull_hint: bool = False) -> APIError:
    """Ollama's 404 (its clients match "not found"); where a pull would help, it says so as Ollama does."""
    hint = ", try pulling it first" if pull_hint else ""
    return APIError(404, f"model '{name}' not found{hint}", code="model_not_found")


# requests -----------------------------------------------------------------------------------------

def _sampling(options: Options | None) -> runner_pb2.SamplingParams:
    params = runner_pb2.SamplingParams()
    if options is None:
        return params
    if options.num_predict is not None and options.num_predict > 0:
        params.max_tokens = options.num_predict  # -1 (no limit) and -2 (fill the context): 0, the Runner's "until done"
    for name in ("temperature", "top_k", "top_p", "min_p", "seed", "repeat_penalty", "presence_penalty",
                 "frequency_penalty"):
        value = getattr(options, name)
        if value is not None:
            setattr(params, name, value)
    params.stop.extend(s for s in options.stop or () if s)  # an empty stop string would end every answer
    return params


def _response_format(fmt: str | dict | None) -> runner_pb2.ResponseFormat | None:
    if fmt is None or fmt == "":
        return None
    if fmt == "json" or fmt == {}:
        return runner_pb2.ResponseFormat(type="json_object")
    return runner_pb2.ResponseFormat(type="json_schema", json_schema=json.dumps(fmt))


def _base_request(body: GeneratingFields, model: ModelName) -> runner_pb2.GenerateRequest:
    request = runner_pb2.GenerateRequest(
        model=model.qualified,
        sampling=_sampling(body.options),
        logprobs=body.logprobs,
        top_logprobs=body.top_logprobs,
        keep_alive=body.keep_alive or "",
        truncate=body.truncate,  # Ollama's default: an over-long chat loses its oldest messages
        # As Ollama loads the model again with the client's num_ctx; here an engine of that context runs
        # beside the configured one.
        context_size=(body.options.num_ctx or 0) if body.options else 0,
    )
    fmt = _response_format(body.format)
    if fmt is not None:
        request.response_format.CopyFrom(fmt)
    return request


def _check_think(body: GeneratingFields, model: ModelName) -> None:
    """Ollama's rule for a model without the thinking capability: `think: false` is fine, asking for
    thinking is a 400. No model served here has it: the Runner's contract carries no reasoning text."""
    if body.think not in (None, False):
        raise APIError(400, f'"{model.typed}" does not support thinking', param="think")


def _arguments_text(arguments: dict | str, param: str) -> str:
    if isinstance(arguments, str):
        try:
            json.loads(arguments or "{}")
        except ValueError:
            raise APIError(400, f"{param}: not a JSON object", param=param) from None
        return arguments or "{}"
    return json.dumps(arguments, ensure_ascii=False)


def _chat_message(message: Message, index: int, call_ids: dict[str, str]) -> runner_pb2.ChatMessage:
    if message.images:
        param = f"messages[{index}].images"
        raise APIError(400, f"{param}: images are not supported by the models served here", param=param)
    out = runner_pb2.ChatMessage(role=message.role, content=message.content or "")
    for j, call in enumerate(message.tool_calls or ()):
        call_id = call.id or f"call_{index}_{j}"
        call_ids[call.function.name] = call_id
        out.tool_calls.append(runner_pb2.ToolCall(
            id=call_id, type="function", name=call.function.name,
            arguments=_arguments_text(call.function.arguments, f"messages[{index}].tool_calls[{j}].function.arguments"),
        ))
    if message.role == "tool":
        out.name = message.tool_name or ""
        # Ollama names the tool; OpenAI-style templates want the id of the call it answers.
        out.tool_call_id = message.tool_call_id or call_ids.get(message.tool_name or "", "")
    return out


def chat_request(body: ChatRequest, model: ModelName) -> runner_pb2.GenerateRequest:
    _check_think(body, model)
    request = _base_request(body, model)
    call_ids: dict[str, str] = {}
    request.chat.messages.extend(_chat_message(m, i, call_ids) for i, m in enumerate(body.messages))
    if body.tools:
        request.chat.tools_json = json.dumps([t.model_dump(mode="json", exclude_none=True) for t in body.tools])
    return request


def generate_request(body: GenerateRequest, model: ModelName) -> runner_pb2.GenerateRequest:
    """/api/generate: the prompt in the model's chat template (with `system`), or as is when `raw`."""
    _check_think(body, model)
    for name in ("suffix", "template", "images", "context"):
        if getattr(body, name):
            raise APIError(400, f"{name}: not supported by the models served here", param=name)
    if body.raw and body.system:
        raise APIError(400, "raw mode does not support template, system, or context", param="raw")
    request = _base_request(body, model)
    if body.raw:
        request.prompt = body.prompt or ""
    else:
        if body.system:
            request.chat.messages.append(runner_pb2.ChatMessage(role="system", content=body.system))
        request.chat.messages.append(runner_pb2.ChatMessage(role="user", content=body.prompt or ""))
    return request


# answers ------------------------------------------------------------------------------------------

@dataclass
class Timings:
    """Monotonic nanosecond marks of one request: arrival and model loaded. Prompt evaluation and
    evaluation come from the engine (Usage): marks taken here as chunks arrive would shrink the
    evaluation to nothing whenever several tokens reach the gateway in one chunk."""

    start: int = field(default_factory=time.perf_counter_ns)
    loaded: int = 0

    @staticmethod
    def mark() -> int:
        return time.perf_counter_ns()

    def fields(self, usage: runner_pb2.Usage) -> dict:
        return {
            "total_duration": self.mark() - self.start,
            "load_duration": self.loaded - self.start,
            "prompt_eval_count": usage.prompt_tokens,
            "prompt_eval_duration": usage.prompt_eval_ns,
            "eval_count": usage.completion_tokens,
            "eval_duration": usage.eval_ns,
        }


def tool_calls(calls) -> list[dict]:
    """Runner tool calls as Ollama shapes them: arguments as an object, an index per call."""
    out = []
    for i, call in enumerate(calls):
        try:
            arguments = json.loads(call.arguments or "{}")
        except ValueError:
            arguments = {}
        out.append({"id": call.id, "function": {"index": i, "name": call.name, "arguments": arguments}})
    return out


@dataclass
class Collected:
    """A generation gathered from its chunks."""

    text: str = ""
    finish_reason: str = ""
    usage: runner_pb2.Usage = field(default_factory=runner_pb2.Usage)
    tool_calls: list = field(default_factory=list)
    logprobs: list = field(default_factory=list)

    def add(self, chunk: runner_pb2.GenerateChunk) -> None:
        self.text += chunk.text
        self.tool_calls.extend(chunk.tool_calls)
        self.logprobs.extend(chunk.logprobs)
        self.finish_reason = chunk.finish_reason or self.finish_reason
        if chunk.HasField("usage"):
            self.usage = chunk.usage


def chat_line(model: ModelName, content: str = "", calls=(), lps=()) -> dict:
    message: dict = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = tool_calls(calls)
    line = {"model": model.typed, "created_at": now_rfc3339(), "message": message, "done": False}
    if lps:
        line["logprobs"] = token_logprobs(lps)
    return line


def generate_line(model: ModelName, text: str = "", lps=()) -> dict:
    line = {"model": model.typed, "created_at": now_rfc3339(), "response": text, "done": False}
    if lps:
        line["logprobs"] = token_logprobs(lps)
    return line


def finish(line: dict, finish_reason: str, usage: runner_pb2.Usage, timings: Timings) -> dict:
    return {**line, "done": True, "done_reason": DONE_REASONS.get(finish_reason, "stop"), **timings.fields(usage)}


def lifecycle_answer(model: ModelName, chat: bool, reason: str) -> dict:
    """The answer to an empty chat or prompt: the model was loaded ("load") or unloaded ("unload")."""
    line = chat_line(model) if chat else generate_line(model)
    return {**line, "done": True, "done_reason": reason}


def embedding(values, dimensions: int | None) -> list[float]:
    """A vector, cut to `dimensions` and normalised again when that is shorter (as Ollama does)."""
    vector = list(values)
    if dimensions and dimensions < len(vector):
        vector = vector[:dimensions]
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        vector = [v / max(norm, 1e-12) for v in vector]
    return vector


def _parameter_size(parameters: str) -> str:
    return parameters.replace(" ", "")  # DMR's "268.10 M" -> Ollama's "268.10M"


def details(config: types_pb2.ModelConfig) -> dict:
    family = config.architecture
    return {
        "parent_model": "",
        "format": config.format or "gguf",
        "family": family,
        "families": [family] if family else None,
        "parameter_size": _parameter_size(config.parameters),
        "quantization_level": config.quantization,
    }


def digest_hex(model_id: str) -> str:
    return model_id.removeprefix("sha256:")


def tag_entries(models) -> list[dict]:
    """/api/tags: one entry per tag, newest first (as `ollama list` shows them)."""
    entries = []
    for model in sorted(models, key=lambda m: m.created, reverse=True):
        for tag in model.tags:
            name = display_name(tag)
            entries.append({
                "name": name, "model": name, "modified_at": rfc3339(model.created), "size": int(model.size),
                "digest": digest_hex(model.id), "details": details(model.config),
            })
    return entries


def ps_entry(runner: runner_pb2.RunnerInfo, config: types_pb2.ModelConfig | None) -> dict:
    name = display_name(runner.model_name)
    size = int(runner.memory_bytes)
    return {
        "name": name, "model": name, "size": size, "digest": digest_hex(runner.model_id),
        "details": details(config or types_pb2.ModelConfig()),
        "expires_at": rfc3339(runner.expires_at) if runner.expires_at else NEVER,
        "size_vram": size if runner.gpu_layers != 0 else 0,
        "context_length": runner.context_size,
    }


def _typed(value: str):
    """GGUF metadata the Store keeps as text, back to numbers where they are numbers."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def show(model: types_pb2.Model, name: str) -> dict:
    config = model.config
    info = {key: _typed(value) for key, value in sorted(config.gguf.items())}
    info.setdefault("general.architecture", config.architecture)
    if config.context_size:
        info.setdefault(f"{config.architecture}.context_length", config.context_size)
    return {
        "modelfile": f"# Modelfile of {name}, served by Model Runner\nFROM {name}\n",
        "parameters": "",
        "template": "",
        "details": details(config),
        "model_info": info,
        # The Runner renders tools into any chat and parses the calls back; it embeds with every model.
        "capabilities": ["completion", "tools"],
        "modified_at": rfc3339(model.created),
    }


class ProgressLines:
    """Distribution progress -> Ollama's pull/push status lines: a first line, one line per layer
    update ("pulling <short digest>" with digest, total and completed), and Ollama's closing lines."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.verb = "pulling" if mode == "pull" else "pushing"

    def opening(self) -> dict:
        return {"status": "pulling manifest" if self.mode == "pull" else "retrieving manifest"}

    def lines(self, progress: types_pb2.Progress) -> list[dict]:
        if progress.type == "success":
            closing = ["verifying sha256 digest", "writing manifest"] if self.mode == "pull" else ["pushing manifest"]
            return [{"status": s} for s in closing] + [{"status": "success"}]
        if progress.type == "error":
            return [{"error": progress.message}]
        if progress.HasField("layer") and progress.layer.id:
            layer = progress.layer
            return [{"status": f"{self.verb} {digest_hex(layer.id)[:12]}", "digest": layer.id,
                     "total": int(layer.size), "completed": int(layer.current)}]
        return [{"status": progress.message}] if progress.message else []
