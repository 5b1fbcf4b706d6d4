"""Request bodies of the OpenAI routes. Pydantic validates them (a wrong type is a 400 naming the field)
and FastAPI puts their schemas into /openapi.json. Unknown fields are ignored, as OpenAI's API does.

Every value is checked against what the Runner's gRPC contract can carry (int32/int64 fields, finite
floats, UTF-8 text) and what the engine can use (llama.cpp's ranges), so a hostile body is a 400 here
and never an error deep in the Runner.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from modelrunner.common.keep_alive import parse_keep_alive

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
MAX_MESSAGES = 4096
MAX_STOP = 16  # llama.cpp's server takes any number; OpenAI 4: 16 is room for both
MAX_STOP_CHARS = 256
MAX_TOOLS = 128  # OpenAI's limit
MAX_LOGIT_BIAS = 1024
MAX_EMBED_INPUTS = 2048  # OpenAI's limit
MAX_JSON_DEPTH = 64  # a body nested deeper (schemas included) is an attack, not a request
NAME = r"^[A-Za-z0-9_.:-]{1,64}$"  # OpenAI's function names, plus "." and ":" (MCP's)


def invalid(message: str, param: str | None = None) -> PydanticCustomError:
    """A validation error whose message is ours alone (pydantic's ValueError adds "Value error, "); a
    `param` names the field where pydantic's location cannot (errors.validation_error reads it)."""
    return PydanticCustomError("invalid_value", message, {"param": param} if param else None)


def check_json(value: Any) -> Any:
    """Refuses, anywhere in a body, what no field can mean: NaN or infinite numbers (Python's JSON parser
    accepts the `NaN` literal, and 1e999 is infinity), text that is not UTF-8 (lone surrogate escapes,
    which protobuf cannot encode), nesting deeper than MAX_JSON_DEPTH. Iterative: no depth overflows
    the stack. Paths are written as errors.validation_error writes fields: `messages[0].content`."""
    pending: list[tuple[Any, str, int]] = [(value, "", 0)]
    while pending:
        item, path, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise invalid(f"{path}: nested deeper than {MAX_JSON_DEPTH} levels", path)
        if isinstance(item, float) and not math.isfinite(item):
            raise invalid(f"{path or 'body'}: {item} is not a JSON number; give a finite number", path)
        if isinstance(item, str):
            _utf8(item, path)
        elif isinstance(item, dict):
            for key, child in item.items():
                child_path = f"{path}.{key}" if path else str(key)
                _utf8(str(key), child_path)
                pending.append((child, child_path, depth + 1))
        elif isinstance(item, list):
            pending.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))
    return value


def _utf8(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        path = path.encode("utf-8", "backslashreplace").decode("utf-8")  # a key's own surrogate, escaped
        raise invalid(f"{path or 'body'}: text with a lone surrogate escape (\\ud800-\\udfff) is not UTF-8",
                      path) from None
    if "\0" in text:  # the engine's tokenizer cannot take it (the Runner refuses it too)
        raise invalid(f"{path or 'body'}: contains a NUL character (U+0000), which cannot be tokenized; remove it",
                      path)


class Lenient(BaseModel):
    """Unknown fields are ignored, as the APIs' own servers do."""

    model_config = ConfigDict(extra="ignore")


class RequestBody(Lenient):
    """A whole request body: checked by check_json before any field (every API family's bodies)."""

    @model_validator(mode="before")
    @classmethod
    def _wire_safe(cls, data: Any) -> Any:
        return check_json(data)


class _Open(BaseModel):
    """Keeps unknown fields: passed on to the chat template as given."""

    model_config = ConfigDict(extra="allow")


class ContentPart(Lenient):
    type: str
    text: str | None = None
    refusal: str | None = None  # an assistant's refusal part, replayed as its text


class FunctionCall(Lenient):
    name: str = Field(max_length=256)
    arguments: str = ""


class ToolCall(Lenient):
    id: str = Field(default="", max_length=256)
    type: str = Field(default="function", max_length=64)
    function: FunctionCall


class ChatMessage(Lenient):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None
    name: str | None = Field(default=None, max_length=256)
    tool_call_id: str | None = Field(default=None, max_length=256)
    tool_calls: list[ToolCall] | None = Field(default=None, max_length=MAX_TOOLS)


class FunctionDefinition(_Open):
    name: str = Field(pattern=NAME, description="1 to 64 letters, digits, _ . : -")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Open):
    type: Literal["function"]
    function: FunctionDefinition


class ToolChoiceFunction(Lenient):
    name: str = Field(pattern=NAME)


class NamedToolChoice(Lenient):
    type: Literal["function"]
    function: ToolChoiceFunction


class StreamOptions(Lenient):
    include_usage: bool = False


class JsonSchemaFormat(Lenient):
    name: str = Field(default="", max_length=256)
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class SamplingFields(RequestBody):
    """Sampling fields both completion routes share (llama.cpp's extras included), in the ranges the
    proto's types and llama.cpp's samplers take."""

    model: str = Field(min_length=1, max_length=1024)
    max_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX, description="leave it out for no limit")
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0, le=INT32_MAX, description="0: the whole vocabulary")
    min_p: float | None = Field(default=None, ge=0, le=1)
    seed: int | None = Field(default=None, ge=-1, le=INT64_MAX, description="-1: random (llama.cpp's)")
    stop: str | list[str] | None = Field(
        default=None, description=f"a string or up to {MAX_STOP} strings of at most {MAX_STOP_CHARS} characters"
    )
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    repeat_penalty: float | None = Field(default=None, gt=0, le=10, description="(0, 10], the Runner's range; 1: off")
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = Field(
        default=None, max_length=MAX_LOGIT_BIAS, description="token id -> bias in [-100, 100]"
    )
    n: int | None = Field(default=None, ge=1, le=1, description="only 1 is supported")
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = Field(default=False, description="keep generating past end of sequence (llama.cpp's)")
    keep_alive: str | None = Field(default=None, max_length=32, description="'5m', '30s', '0', '-1' (forever)")
    user: str | None = Field(default=None, max_length=256)

    @field_validator("keep_alive")
    @classmethod
    def _keep_alive(cls, value: str | None) -> str | None:
        """Checked here as the Runner checks it, so a bad one is refused before any model loads."""
        if value is not None:
            try:
                parse_keep_alive(value)
            except ValueError as exc:
                raise invalid(str(exc)) from None
        return value

    @field_validator("stop")
    @classmethod
    def _stop_count(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOP:
            raise invalid(f"give at most {MAX_STOP} stop strings, not {len(stops)}")
        if any(len(stop) > MAX_STOP_CHARS for stop in stops):
            raise invalid(f"a stop string may have at most {MAX_STOP_CHARS} characters")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key in value or {}:
            if not key.isascii() or not key.isdigit() or int(key) > INT32_MAX:
                raise invalid(f"key {key[:32]!r} is not a token id (an integer from 0 to {INT32_MAX})")
        return value


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    tools: list[Tool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = Field(default=None, description="false: at most one tool call")
    response_format: ResponseFormat | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20, description="needs logprobs: true")
    # Read only to be refused: each asks for an answer these models cannot give (see _unservable).
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None

    @model_validator(mode="after")
    def _unservable(self) -> ChatCompletionRequest:
        """A field that would change the answer in a way no local model can is refused, naming it, rather
        than ignored (what is only a hint, as reasoning_effort, prediction or service_tier, is ignored)."""
        if self.top_logprobs and not self.logprobs:
            raise invalid("top_logprobs: needs logprobs: true", "top_logprobs")
        if any(m != "text" for m in self.modalities or ()):
            raise invalid("modalities: only [\"text\"] is supported: the models served here answer in text",
                          "modalities")
        if self.audio is not None:
            raise invalid("audio: audio output is not supported: the models served here answer in text", "audio")
        if self.web_search_options is not None:
            raise invalid("web_search_options: web search is not supported here", "web_search_options")
        if self.functions:
            raise invalid("functions: the deprecated functions are not supported: send each as a tool of type "
                          "\"function\" in tools", "functions")
        if self.function_call not in (None, "none", "auto"):
            raise invalid("function_call: the deprecated function_call is not supported: use tool_choice",
                          "function_call")
        return self


class CompletionRequest(SamplingFields):
    prompt: str | list[str] = Field(description="a string, or a list of one string")
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool = Field(default=False, description="the prompt, then the completion (not with logprobs)")
    suffix: str | None = Field(default=None, description="refused unless empty: no insertion here")
    best_of: int | None = Field(default=None, ge=1, le=1, description="only 1 is supported")

    @field_validator("prompt", mode="before")
    @classmethod
    def _text_prompt(cls, value: Any) -> Any:
        items = value if isinstance(value, list) else [value]
        if any(_token_ids(i) for i in items):
            raise invalid("token id arrays are not supported: send the text")
        return value

    @model_validator(mode="after")
    def _unservable(self) -> CompletionRequest:
        """What would change the answer in a way the Runner cannot is refused, naming the field."""
        if self.suffix:
            raise invalid("suffix: inserting between a prompt and a suffix is not supported", "suffix")
        if self.echo and self.logprobs is not None:
            raise invalid("echo: the prompt's logprobs are not available: drop echo or logprobs", "echo")
        return self


class EmbeddingRequest(RequestBody):
    model: str = Field(min_length=1, max_length=1024)
    input: str | list[str] = Field(description=f"a non-empty string or up to {MAX_EMBED_INPUTS} of them")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, le=INT32_MAX)
    user: str | None = Field(default=None, max_length=256)

    @field_validator("input", mode="before")
    @classmethod
    def _inputs(cls, value: Any) -> Any:
        items = value if isinstance(value, list) else [value]
        if not items:
            raise invalid("give at least one string")
        if len(items) > MAX_EMBED_INPUTS:
            raise invalid(f"give at most {MAX_EMBED_INPUTS} inputs, not {len(items)}")
        if any(_token_ids(i) for i in items):
            raise invalid("token id arrays are not supported: send the text")
        if any(i == "" for i in items):
            raise invalid("an input is empty: every input needs some text")
        return value


def _token_ids(item: Any) -> bool:
    """An OpenAI token id input: an integer, or a non-empty list of integers (booleans are not ids)."""
    def is_id(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    return is_id(item) or (isinstance(item, list) and bool(item) and all(is_id(t) for t in item))
