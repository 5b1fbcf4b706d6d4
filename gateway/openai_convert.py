"""OpenAI request bodies -> Runner gRPC requests, and Runner chunks -> OpenAI answers. Pure functions."""

from __future__ import annotations

import base64
import json
import math
import struct
import time
import uuid
from dataclasses import dataclass, field

from modelrunner.common.names import InvalidReference, is_digest, parse_reference
from modelrunner.gateway import forced_tools
from modelrunner.gateway.errors import APIError
from modelrunner.gateway.openai_models import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    EmbeddingRequest,
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
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    texts = []
    for j, part in enumerate(message.content):
        if part.type != "text" or part.text is None:
            param = f"messages[{index}].content[{j}]"
            raise APIError(400, f"{param}: only text content parts are supported, got {part.type!r}", param=param)
        texts.append(part.text)
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
        request.response_format.type = fmt.type
        if fmt.json_schema is not None and fmt.json_schema.schema_ is not None:
            request.response_format.json_schema = json.dumps(fmt.json_schema.schema_)
    return request


def completion_request(body: CompletionRequest, model: ModelName) -> runner_pb2.GenerateRequest:
    if isinstance(body.prompt, list):
        if len(body.prompt) != 1:
            raise APIError(400, "prompt: give a string or a list of exactly one string", param="prompt")
        prompt = body.prompt[0]
    else:
        prompt = body.prompt
    return runner_pb2.GenerateRequest(
        model=model.qualified,
        prompt=prompt,
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


def chat_logprobs(items) -> dict:
    return {
        "content": [
            {
                "token": item.token,
                "logprob": finite_logprob(item.logprob),
                "bytes": list(item.bytes or item.token.encode()),
                "top_logprobs": [
                    {"token": t.token, "logprob": finite_logprob(t.logprob), "bytes": list(t.token.encode())}
                    for t in item.top
                ],
            }
            for item in items
        ]
    }


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


def text_completion(c: Collected, model: str, logprobs: bool) -> dict:
    return {
        "id": new_id("cmpl"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "text": c.text,
            "logprobs": completion_logprobs(c.logprobs) if logprobs else None,
            "finish_reason": c.finish_reason or "stop",
        }],
        "usage": usage(c.usage),
    }


def embedding_vector(values, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    return list(values)


def embeddings(reply: runner_pb2.EmbedResponse, model: str, encoding_format: str) -> dict:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": embedding_vector(e.values, encoding_format)}
            for i, e in enumerate(reply.embeddings)
        ],
        "model": model,
        "usage": {"prompt_tokens": reply.prompt_tokens, "total_tokens": reply.prompt_tokens},
    }
