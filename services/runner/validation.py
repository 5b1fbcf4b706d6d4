"""Checks of every GenerateRequest and EmbedRequest field, once, before any work is done.

gRPC callers do not pass the gateway, so the Runner checks again what the engine cannot use: NaN and
infinities, ranges, counts and sizes. Each error is INVALID_ARGUMENT and starts with the field's path,
as the gateway's 400s do. What needs the loaded model (token ids against its vocabulary) is checked
when the job is built (jobs.py).
"""

from __future__ import annotations

import json
import math

from modelrunner.common.errors import ServiceError, invalid
from modelrunner.runner.backends.base import LoadOptions
from modelrunner.common.keep_alive import parse_keep_alive
from modelrunner.v1 import runner_pb2

MAX_MESSAGES = 4096
MAX_TEXT_CHARS = 4 * 1024 * 1024  # prompt, or all messages together
MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 256
MAX_LOGIT_BIAS = 4096
MAX_TOP_LOGPROBS = 20
MAX_PENALTY = 2.0  # OpenAI's range for presence and frequency penalties
MAX_REPEAT_PENALTY = 10.0
MAX_SCHEMA_CHARS = 256 * 1024
MAX_TOOLS_CHARS = 1024 * 1024
MAX_EMBED_INPUTS = 2048
MAX_MODEL_CHARS = 512
MAX_PARALLEL = 256  # llama.cpp's LLAMA_MAX_SEQ
MAX_BATCH_SIZE = 65536
MAX_THREADS = 1024
MAX_CONTEXT_SIZE = 2**31 - 1
RANDOM_SEED = -1  # llama.cpp's server: a random seed
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
RESPONSE_FORMATS = frozenset({"", "text", "json_object", "json_schema"})


def field_error(field: str, message: str) -> ServiceError:
    return invalid(f"{field}: {message}")


def check_text(field: str, text: str) -> None:
    """A NUL (U+0000) is refused: llama.cpp's tokenizer throws on a byte its vocabulary lacks (found by
    fuzzing a byte vocabulary), and the exception aborts the engine process."""
    if "\0" in text:
        raise field_error(field, "contains a NUL character (U+0000), which cannot be tokenized; remove it")


def check_model(model: str, keep_alive: str = "") -> None:
    if not model:
        raise field_error("model", "is required")
    if len(model) > MAX_MODEL_CHARS:
        raise field_error("model", f"is longer than {MAX_MODEL_CHARS} characters")
    if keep_alive:
        try:
            parse_keep_alive(keep_alive)
        except ValueError as exc:
            raise field_error("keep_alive", str(exc)) from None


def check_context_size(context_size: int) -> None:
    """A request's own context size (GenerateRequest.context_size): 0, or what a model's settings may ask."""
    if not 0 <= context_size <= MAX_CONTEXT_SIZE:
        raise field_error("context_size",
                          f"must be from 0 (the configured context) to {MAX_CONTEXT_SIZE}, not {context_size}")


def check_generate(request: runner_pb2.GenerateRequest) -> None:
    check_model(request.model, request.keep_alive)
    check_context_size(request.context_size)
    kind = request.WhichOneof("input")
    if kind is None:
        raise invalid("chat or prompt is required")
    if kind == "chat":
        _check_chat(request.chat)
    elif len(request.prompt) > MAX_TEXT_CHARS:
        raise field_error("prompt", f"has {len(request.prompt)} characters; at most {MAX_TEXT_CHARS} are accepted")
    else:
        check_text("prompt", request.prompt)
    _check_sampling(request.sampling)
    fmt = request.response_format
    if fmt.type not in RESPONSE_FORMATS:
        raise field_error("response_format.type", f"must be text, json_object or json_schema, not {fmt.type!r}")
    if fmt.type == "json_schema":
        if not fmt.json_schema:
            raise field_error("response_format.json_schema", "is required with type json_schema")
        if len(fmt.json_schema) > MAX_SCHEMA_CHARS:
            raise field_error("response_format.json_schema", f"is longer than {MAX_SCHEMA_CHARS} characters")
    if not 0 <= request.top_logprobs <= MAX_TOP_LOGPROBS:
        raise field_error("top_logprobs", f"must be from 0 to {MAX_TOP_LOGPROBS}, not {request.top_logprobs}")


def _check_chat(chat: runner_pb2.Chat) -> None:
    if not chat.messages:
        raise field_error("chat.messages", "is empty")
    if len(chat.messages) > MAX_MESSAGES:
        raise field_error("chat.messages", f"has {len(chat.messages)} messages; at most {MAX_MESSAGES} are accepted")
    total = 0
    for i, m in enumerate(chat.messages):
        if m.role not in ROLES:
            raise field_error(f"chat.messages[{i}].role", f"must be one of {', '.join(sorted(ROLES))}, not {m.role!r}")
        total += len(m.content) + sum(len(c.arguments) for c in m.tool_calls)
        if total > MAX_TEXT_CHARS:
            raise field_error("chat.messages", f"hold more than {MAX_TEXT_CHARS} characters")
        check_text(f"chat.messages[{i}].content", m.content)
        check_text(f"chat.messages[{i}].name", m.name)
        for j, call in enumerate(m.tool_calls):
            check_text(f"chat.messages[{i}].tool_calls[{j}].arguments", call.arguments)
    for name in ("tools_json", "tool_choice_json"):
        text = getattr(chat, name)
        if len(text) > MAX_TOOLS_CHARS:
            raise field_error(f"chat.{name}", f"is longer than {MAX_TOOLS_CHARS} characters")
        if text:
            try:
                value = json.loads(text)
            except (ValueError, RecursionError) as exc:
                raise field_error(f"chat.{name}", f"is not valid JSON: {exc}") from None
            if name == "tools_json" and not isinstance(value, list):
                raise field_error("chat.tools_json", "must be a JSON list of tools")


def _finite(field: str, value: float) -> None:
    if not math.isfinite(value):
        raise field_error(field, f"must be a finite number, not {value}")


def _in_range(field: str, value: float, low: float, high: float, low_open: bool = False) -> None:
    _finite(field, value)
    if value > high or value < low or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise field_error(field, f"must be in {bracket}{low:g}, {high:g}], not {value:g}")


def _check_sampling(p: runner_pb2.SamplingParams) -> None:
    if p.max_tokens < 0:
        raise field_error("sampling.max_tokens", f"must be >= 0 (0: until the end), not {p.max_tokens}")
    if p.HasField("temperature"):
        _finite("sampling.temperature", p.temperature)
        if p.temperature < 0:
            raise field_error("sampling.temperature", f"must be >= 0 (0 is greedy), not {p.temperature:g}")
    if p.HasField("top_p"):
        _in_range("sampling.top_p", p.top_p, 0.0, 1.0, low_open=True)
    if p.HasField("min_p"):
        _in_range("sampling.min_p", p.min_p, 0.0, 1.0)
    if p.HasField("top_k") and p.top_k < 0:
        raise field_error("sampling.top_k", f"must be >= 0 (0: the whole vocabulary), not {p.top_k}")
    if p.HasField("seed") and p.seed < RANDOM_SEED:
        raise field_error("sampling.seed", f"must be >= 0, or -1 for a random seed, not {p.seed}")
    if p.HasField("repeat_penalty"):
        _in_range("sampling.repeat_penalty", p.repeat_penalty, 0.0, MAX_REPEAT_PENALTY, low_open=True)
    for name in ("presence_penalty", "frequency_penalty"):
        if p.HasField(name):
            _in_range(f"sampling.{name}", getattr(p, name), -MAX_PENALTY, MAX_PENALTY)
    if len(p.stop) > MAX_STOP_STRINGS:
        raise field_error("sampling.stop", f"has {len(p.stop)} strings; at most {MAX_STOP_STRINGS} are accepted")
    for i, s in enumerate(p.stop):
        if len(s) > MAX_STOP_CHARS:
            raise field_error(f"sampling.stop[{i}]", f"is longer than {MAX_STOP_CHARS} characters")
    if len(p.logit_bias) > MAX_LOGIT_BIAS:
        raise field_error("sampling.logit_bias", f"has {len(p.logit_bias)} entries; at most {MAX_LOGIT_BIAS}")
    for token, bias in p.logit_bias.items():
        _finite(f"sampling.logit_bias[{token}]", bias)


def check_logit_bias_tokens(p: runner_pb2.SamplingParams, vocab_size: int) -> None:
    """Token ids must exist in the loaded model's vocabulary."""
    for token in p.logit_bias:
        if not 0 <= token < vocab_size:
            raise field_error(
                f"sampling.logit_bias[{token}]", f"is not a token id of this model (0 to {vocab_size - 1})"
            )


def check_embed(request: runner_pb2.EmbedRequest) -> None:
    check_model(request.model, request.keep_alive)
    if not request.inputs:
        raise field_error("inputs", "is empty")
    if len(request.inputs) > MAX_EMBED_INPUTS:
        raise field_error("inputs", f"has {len(request.inputs)} inputs; at most {MAX_EMBED_INPUTS} are accepted")
    total = 0
    for i, text in enumerate(request.inputs):
        if not text:
            raise field_error(f"inputs[{i}]", "is empty")
        total += len(text)
        if total > MAX_TEXT_CHARS:
            raise field_error("inputs", f"hold more than {MAX_TEXT_CHARS} characters")
        check_text(f"inputs[{i}]", text)


def check_load_options(options: LoadOptions) -> None:
    """What a model's settings (fields and runtime flags together) may ask of the engine, checked
    before they are saved. A context too large for the memory is refused when loading, where the
    memory budget is known."""
    limits = [
        ("parallel", options.parallel, 1, MAX_PARALLEL),
        ("context_size", options.context_size, 0, MAX_CONTEXT_SIZE),
        ("runtime_flags (--batch-size)", options.batch_size, 1, MAX_BATCH_SIZE),
        ("runtime_flags (--threads)", options.threads, 0, MAX_THREADS),
    ]
    for field, value, low, high in limits:
        if not low <= value <= high:
            raise field_error(field, f"must be from {low} to {high}, not {value}")
    if options.gpu_layers is not None and options.gpu_layers < -1:
        raise field_error("gpu_layers", f"must be -1 (all) or more, not {options.gpu_layers}")
