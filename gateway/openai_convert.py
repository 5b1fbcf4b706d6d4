"""OpenAI request bodies -> Runner gRPC requests, and Runner chunks -> OpenAI answers. Pure functions."""

from __future__ import annotations

import base64
import json
import math
import re
import struct
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from modelrunner.common.names import InvalidReference, is_digest, parse_reference
from modelrunner.gateway import forced_tools
from modelrunner.gateway.errors import APIError
from modelrunner.gateway.openai_models import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    EmbeddingRequest,
    ResponseFormat,
    SamplingFields,
)
from modelrunner.v1 import runner_pb2


@dataclass(frozen=True)
class ModelName:
    qualified: str  # what the Runner and Store get: "docker.io/ai/gemma3:latest" or "sha256:..."
    familiar: str  # what users see: "ai/gemma3:latest"


def resolve_model(name: str, param: str = "model") -> ModelName:
    """Validates a model name (OCI grammar; short names get `ai/` and `:latest`), 400 if invalid."""
    if is_digest(name):
        return ModelName(name, name)
    try:
        ref = parse_reference(name)
    except InvalidReference as exc:
        raise APIError(400, f"{param}: {exc}", param=param, code="invalid_model_name") from None
    return ModelName(str(ref), ref.familiar)


def familiar(qualified: str) -> str:
    try:
        return parse_reference(qualified).familiar
    except InvalidReference:
        return qualified


def _content_text(message: ChatMessage, index: int) -> str:
    """A message's text: its parts' joined, an assistant's refusal parts as their text (a client replays
    them); any other part (an image, audio, a file) is a 400 naming it, as no model here reads one."""
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    texts = []
    for j, part in enumerate(message.content):
        param = f"messages[{index}].content[{j}]"
        if part.type not in ("text", "refusal") or (part.type == "refusal" and message.role != "assistant"):
            raise APIError(400, f"{param}: only text content parts are supported, got {part.type!r}", param=param,
                           code="invalid_value")
        text = part.text if part.type == "text" else part.refusal
        if text is None:
            raise APIError(400, f"{param}.{part.type}: a {part.type} part needs its {part.type}",
                           param=f"{param}.{part.type}", code="invalid_value")
        texts.append(text)
    return "\n".join(texts)


def _sampling(body: SamplingFields, max_tokens: int | None) -> runner_pb2.SamplingParams:
    params = runner_pb2.SamplingParams(max_tokens=max_tokens or 0, ignore_eos=body.ignore_eos)
    for name in ("temperature", "top_p", "top_k", "min_p", "seed", "repeat_penalty", "presence_penalty",
                 "frequency_penalty"):
        value = getattr(body, name)
        if value is not None:
            setattr(params, name, value)
    if body.stop is not None:  # llama.cpp's server ignores empty stop strings; here one would end every answer
        params.stop.extend(s for s in ([body.stop] if isinstance(body.stop, str) else body.stop) if s)
    for token, bias in (body.logit_bias or {}).items():
        params.logit_bias[int(token)] = bias  # the model checked the keys
    return params


def _forced(body: ChatCompletionRequest) -> str | None:
    """The function a call is forced to ("" for any), or None when the model may answer in text (telling
    the chat template the tool_choice is not enough: a template may ignore it, a model disobey it)."""
    choice = body.tool_choice
    if choice is None or choice in ("auto", "none"):
        return None
    if not body.tools:
        raise APIError(400, "tool_choice: a required or named tool_choice needs tools", param="tool_choice",
                       code="invalid_value")
    if choice == "required":
        return ""
    if not any(t.function.name == choice.function.name for t in body.tools):
        param = "tool_choice.function.name"
        raise APIError(400, f"{param}: no function named {choice.function.name!r} in tools", param=param,
                       code="invalid_value")
    return choice.function.name


def chat_request(body: ChatCompletionRequest, model: ModelName) -> runner_pb2.GenerateRequest:
    chat = runner_pb2.Chat()
    for i, message in enumerate(body.messages):
        chat.messages.append(
            runner_pb2.ChatMessage(
                role=message.role,
                content=_content_text(message, i),
                name=message.name or "",
                tool_call_id=message.tool_call_id or "",
                tool_calls=[
                    runner_pb2.ToolCall(id=c.id, type=c.type, name=c.function.name, arguments=c.function.arguments)
                    for c in message.tool_calls or ()
                ],
            )
        )
    if body.tools:
        chat.tools_json = json.dumps([t.model_dump(mode="json", exclude_unset=True) for t in body.tools])
    if body.tool_choice is not None:
        choice = body.tool_choice
        chat.tool_choice_json = json.dumps(choice if isinstance(choice, str) else choice.model_dump(mode="json"))
    request = runner_pb2.GenerateRequest(
        model=model.qualified,
        chat=chat,
        sampling=_sampling(body, body.max_completion_tokens or body.max_tokens),
        logprobs=body.logprobs,
        top_logprobs=body.top_logprobs or 0,
        keep_alive=body.keep_alive or "",
    )
    forced = _forced(body)
    fmt = body.response_format
    if forced is not None:
        if fmt is not None and fmt.type != "text":
            raise APIError(400, "response_format: a JSON response_format cannot be combined with a required or named "
                                "tool_choice", param="response_format", code="invalid_value")
        forced_tools.force(request, json.loads(chat.tools_json), forced or None, field="tools[{}].function.parameters")
    elif fmt is not None:
        _response_format(request, fmt)
    return request


def _response_format(request: runner_pb2.GenerateRequest, fmt: ResponseFormat) -> None:
    """OpenAI's json_schema needs its json_schema object, whose schema may be left out: any JSON object
    then (llama.cpp's server reads an absent schema as {})."""
    if fmt.type != "json_schema":
        request.response_format.type = fmt.type
        return
    if fmt.json_schema is None:
        raise APIError(400, "response_format.json_schema: is required with type json_schema",
                       param="response_format.json_schema", code="invalid_value")
    if fmt.json_schema.schema_ is None:
        request.response_format.type = "json_object"
        return
    request.response_format.type = "json_schema"
    request.response_format.json_schema = json.dumps(fmt.json_schema.schema_)


def allowed_calls(calls: Sequence[runner_pb2.ToolCall], body: ChatCompletionRequest) -> list[runner_pb2.ToolCall]:
    """The calls to answer: with parallel_tool_calls false, the first alone (the model may write more)."""
    return list(calls[:1] if body.parallel_tool_calls is False else calls)


_CONTRACT = re.compile(r"^(?:sampling\.|chat\.)?(?P<field>[a-z_]+)(?P<rest>[^:\s]*): ")
_CLIENT_FIELD = {"tools_json": "tools", "tool_choice_json": "tool_choice", "inputs": "input",
                 "response_format.json_schema": "response_format.json_schema.schema"}
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"  # OpenAI's code: clients read it to shorten the chat


def blame(error: APIError, prompt_field: str) -> APIError:
    """The Runner's refusal of a request, in the client's terms: the contract's field it names
    ("sampling.logit_bias[7]", "response_format.json_schema") becomes the field the client sent
    ("logit_bias[7]", "response_format.json_schema.schema"), and a prompt longer than the context is
    OpenAI's context_length_exceeded on `prompt_field` ("messages" or "prompt")."""
    if error.status != 400:
        return error
    if error.message.startswith("the prompt has ") and " but the context holds " in error.message:
        return APIError(400, error.message, type=error.type, param=prompt_field, code=CONTEXT_LENGTH_EXCEEDED,
                        headers=error.headers)
    match = _CONTRACT.match(error.message)
    if match is None:
        return error
    contract = error.message[:match.end() - 2]
    field = match["field"] + match["rest"]
    field = next((sent + field.removeprefix(name) for name, sent in _CLIENT_FIELD.items()
                  if field == name or field.startswith((name + ".", name + "["))), field)
    return APIError(400, field + error.message[len(contract):], type=error.type, param=field, code=error.code,
                    headers=error.headers)


def completion_prompt(body: CompletionRequest) -> str:
    if isinstance(body.prompt, list):
        if len(body.prompt) != 1:
            raise APIError(400, "prompt: give a string or a list of exactly one string", param="prompt")
        return body.prompt[0]
    return body.prompt


def echoed(body: CompletionRequest) -> str:
    """What the answer's text starts with: the prompt, when echo asks for it."""
    return completion_prompt(body) if body.echo else ""


def completion_request(body: CompletionRequest, model: ModelName) -> runner_pb2.GenerateRequest:
    return runner_pb2.GenerateRequest(
        model=model.qualified,
        prompt=completion_prompt(body),
        sampling=_sampling(body, body.max_tokens),
        logprobs=body.logprobs is not None,
        top_logprobs=body.logprobs or 0,
        keep_alive=body.keep_alive or "",
    )


def embed_request(body: EmbeddingRequest, model: ModelName) -> runner_pb2.EmbedRequest:
    inputs = [body.input] if isinstance(body.input, str) else body.input
    return runner_pb2.EmbedRequest(model=model.qualified, inputs=inputs)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(u: runner_pb2.Usage) -> dict:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_prompt_tokens},
    }


def tool_calls(calls, *, indexed: bool = False) -> list[dict]:
    out = []
    for i, call in enumerate(calls):
        entry = {"id": call.id, "type": call.type or "function",
                 "function": {"name": call.name, "arguments": call.arguments}}
        out.append({"index": i, **entry} if indexed else entry)
    return out


LOGPROB_FLOOR = -9999.0  # what OpenAI answers for a token of no probability: JSON has no -Infinity


def finite_logprob(value: float) -> float:
    """A grammar's or a bias's banned token has logprob -inf, which no JSON answer can carry."""
    return value if math.isfinite(value) else LOGPROB_FLOOR


def _logprob(item) -> dict:
    """A token's (or an alternative's) logprob with its own bytes: its text shows part of a UTF-8
    character as U+FFFD."""
    return {"token": item.token, "logprob": finite_logprob(item.logprob), "bytes": list(item.bytes or item.token.encode())}


def token_logprobs(items) -> list[dict]:
    """Each sampled token with its alternatives: OpenAI's chat `logprobs.content`, and Ollama's `logprobs`."""
    return [{**_logprob(item), "top_logprobs": [_logprob(t) for t in item.top]} for item in items]


def chat_logprobs(items) -> dict:
    return {"content": token_logprobs(items)}


def completion_logprobs(items, offset: int = 0) -> dict:
    tokens, offsets = [], []
    for item in items:
        offsets.append(offset)
        offset += len(item.token)
        tokens.append(item.token)
    return {
        "tokens": tokens,
        "token_logprobs": [finite_logprob(item.logprob) for item in items],
        "top_logprobs": [{t.token: finite_logprob(t.logprob) for t in item.top} for item in items],
        "text_offset": offsets,
    }


@dataclass
class Collected:
    """A whole generation gathered from its stream of chunks."""

    text: str = ""
    finish_reason: str = ""
    stop_sequence: str = ""
    usage: runner_pb2.Usage = field(default_factory=runner_pb2.Usage)
    tool_calls: list = field(default_factory=list)
    logprobs: list = field(default_factory=list)
    model: str = ""

    def add(self, chunk: runner_pb2.GenerateChunk) -> None:
        self.text += chunk.text
        self.logprobs.extend(chunk.logprobs)
        self.tool_calls.extend(chunk.tool_calls)
        self.finish_reason = chunk.finish_reason or self.finish_reason
        self.stop_sequence = chunk.stop_sequence or self.stop_sequence
        self.model = self.model or chunk.model
        if chunk.HasField("usage"):
            self.usage = chunk.usage


def chat_completion(c: Collected, model: str, logprobs: bool) -> dict:
    message: dict = {"role": "assistant", "content": c.text if c.text or not c.tool_calls else None}
    if c.tool_calls:
        message["tool_calls"] = tool_calls(c.tool_calls)
    return {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": chat_logprobs(c.logprobs) if logprobs else None,
            "finish_reason": c.finish_reason or "stop",
        }],
        "usage": usage(c.usage),
    }


def text_completion(c: Collected, model: str, logprobs: bool, echo: str = "") -> dict:
    return {
        "id": new_id("cmpl"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "text": echo + c.text,
            "logprobs": completion_logprobs(c.logprobs) if logprobs else None,
            "finish_reason": c.finish_reason or "stop",
        }],
        "usage": usage(c.usage),
    }


def embedding_vector(values, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    return list(values)


def shortened(values: Sequence[float], dimensions: int | None) -> Sequence[float]:
    """The first `dimensions` values, normalised again to unit length, as OpenAI shortens its embeddings
    (a model's leading dimensions carry the most); a model with fewer is a 400 naming the field."""
    if dimensions is None or dimensions == len(values):
        return values
    if dimensions > len(values):
        raise APIError(400, f"dimensions: {dimensions} is more than this model's {len(values)}", param="dimensions",
                       code="invalid_value")
    head = values[:dimensions]
    norm = math.sqrt(sum(v * v for v in head))
    return [v / norm for v in head] if norm > 0 else list(head)


def embeddings(reply: runner_pb2.EmbedResponse, model: str, encoding_format: str,
               dimensions: int | None = None) -> dict:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i,
             "embedding": embedding_vector(shortened(e.values, dimensions), encoding_format)}
            for i, e in enumerate(reply.embeddings)
        ],
        "model": model,
        "usage": {"prompt_tokens": reply.prompt_tokens, "total_tokens": reply.prompt_tokens},
    }
