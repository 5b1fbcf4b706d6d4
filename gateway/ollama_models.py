"""Request bodies of the Ollama routes (`/api/*`), as Ollama's server reads them (api/types.go).

Pydantic validates them: a wrong type or range is a 400 in Ollama's `{"error": "..."}` body naming the
field. As in Ollama, unknown fields and unknown `options` are ignored, a null field is an absent one,
`stream` defaults to true, and a request may name its model `model` or (older clients) `name`. Values
are bounded by what the Runner's gRPC contract carries (int32 counts, int64 seeds, finite floats).
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelrunner.common.keep_alive import MAX_KEEP_ALIVE_S
from modelrunner.gateway.openai_models import check_json, invalid

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
MAX_MESSAGES = 4096
MAX_TOOLS = 128
MAX_STOP = 16
MAX_STOP_CHARS = 256
MAX_EMBED_INPUTS = 2048
MODEL_FIELD = Field(min_length=1, max_length=1024,
                    description="an Ollama model name: `gemma3`, `gemma3:270m`, `ai/gemma3`")

# Go's time.ParseDuration grammar (what Ollama accepts as a keep_alive string).
_GO_DURATION = re.compile(r"^[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+$")
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# The Runner's own duration grammar: such strings pass through unchanged (and show so in /engines/ps).
_RUNNER_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|h|m|s))+$")
_NUMBER = re.compile(r"^[+-]?\d+(?:\.\d+)?$")


def keep_alive_text(value: Any) -> str | None:
    """Ollama's keep_alive (seconds as a number, a Go duration string; negative: forever) as the
    Runner's: "-1" (forever), "0" (unload after the request), a duration, or seconds. Over 10 years is
    refused here, as the Runner refuses it, before any model loads."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise invalid("give a duration like \"5m\" or \"1h30m\", seconds as a number, 0 or -1")
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        value = float(value)  # "-1" and "300" as strings too (Go's parser wants a unit; users often omit it)
    if isinstance(value, str):
        text = value.strip().lstrip("+")
        if not _GO_DURATION.match(text):
            raise invalid(f"invalid duration {value[:40]!r}: use e.g. \"30s\", \"5m\", \"1h30m\", 0 or -1")
        seconds = sum(float(n) * _GO_UNITS[u] for n, u in _GO_PART.findall(text))
        if text.startswith("-") and seconds:
            return "-1"
    elif isinstance(value, float) and not math.isfinite(value):
        raise invalid("give a finite number of seconds")
    else:
        seconds, text = value, ""  # an int stays one: float() of a 400-digit integer overflows
    if seconds < 0:
        return "-1"
    if seconds > MAX_KEEP_ALIVE_S:
        raise invalid(f"at most {MAX_KEEP_ALIVE_S} seconds (10 years); -1 keeps the model loaded forever")
    short = f"{seconds:.3f}".rstrip("0").rstrip(".")
    if short in ("", "0"):
        return "0"  # what rounds to no time at all unloads after the request, as 0 does
    return text if _RUNNER_DURATION.match(text) else short


class _Body(BaseModel):
    """A JSON object of an Ollama body. A field given as null is read as absent, as Go reads it (a nil
    pointer or slice): `"stream": null` streams, `"messages": null` is an empty chat."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_absent(cls, data: Any) -> Any:
        if isinstance(data, dict) and None in data.values():
            return {key: value for key, value in data.items() if value is not None}
        return data


class _Request(_Body):
    """A whole request body: checked once for what cannot cross to the services (check_json, as
    every API family's bodies are)."""

    @model_validator(mode="before")
    @classmethod
    def _carriable(cls, data: Any) -> Any:
        return check_json(data)


class _Named(_Request):
    """A request naming its model as `model` or, as older Ollama clients do, `name`."""

    model: str = MODEL_FIELD

    @model_validator(mode="before")
    @classmethod
    def _name_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("model") and isinstance(data.get("name"), str):
            return {**data, "model": data["name"]}
        return data


class Options(_Body):
    """The `options` the Runner applies per request (num_ctx: per engine, as Ollama loads the model with
    it); Ollama's other options (num_gpu, num_thread, mirostat, ...) are ignored here as Ollama ignores
    unknown ones."""

    num_predict: int | None = Field(default=None, ge=-2, le=INT32_MAX, description="-1: no limit, -2: fill the context")
    temperature: float | None = Field(default=None, ge=0, le=100)
    top_k: int | None = Field(default=None, ge=0, le=INT32_MAX)
    top_p: float | None = Field(default=None, gt=0, le=1)
    min_p: float | None = Field(default=None, ge=0, le=1)
    seed: int | None = Field(default=None, ge=-1, le=INT64_MAX)
    stop: list[str] | None = Field(default=None, description=f"up to {MAX_STOP} strings")
    num_ctx: int | None = Field(default=None, ge=1, le=INT32_MAX,
                                description="the context size to run the model with (its own engine); absent: "
                                            "the model's setting (`/engines/_configure`)")
    repeat_penalty: float | None = Field(default=None, gt=0, le=10, description="(0, 10], the Runner's range; 1: off")
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)

    @field_validator("stop", mode="before")
    @classmethod
    def _stops(cls, value: Any) -> Any:
        stops = [value] if isinstance(value, str) else value
        if isinstance(stops, list):
            if len(stops) > MAX_STOP:
                raise invalid(f"give at most {MAX_STOP} stop strings, not {len(stops)}")
            if any(isinstance(s, str) and len(s) > MAX_STOP_CHARS for s in stops):
                raise invalid(f"a stop string may have at most {MAX_STOP_CHARS} characters")
        return stops


class ToolCallFunction(_Body):
    name: str = Field(min_length=1, max_length=256)
    arguments: dict[str, Any] | str = Field(default_factory=dict, description="an object (JSON text is accepted)")


class ToolCall(_Body):
    id: str | None = Field(default=None, max_length=256)
    function: ToolCallFunction


class Message(_Body):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = Field(default=None, max_length=256)
    tool_call_id: str | None = Field(default=None, max_length=256)


class ToolFunction(_Body):
    name: str = Field(min_length=1, max_length=256)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Body):
    type: Literal["function"] = "function"
    function: ToolFunction


THINK_LEVELS = ("low", "medium", "high", "max")
Think = bool | Literal["low", "medium", "high", "max"] | None


class GeneratingFields(_Named):
    """What /api/chat and /api/generate share."""

    stream: bool = True
    format: str | dict[str, Any] | None = Field(default=None, description='"json" or a JSON schema')
    options: Options | None = None
    keep_alive: Any = Field(default=None, description='a duration ("5m"), seconds, 0 (unload now) or -1 (forever)')
    think: Think = None
    logprobs: bool = False
    top_logprobs: int = Field(default=0, ge=0, le=20)
    truncate: bool = Field(default=True, description="cut a chat or prompt too long for the context to fit "
                                                     "(the oldest messages go first); false: refuse it (400)")

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _keep_alive(cls, value: Any) -> str | None:
        return keep_alive_text(value)

    @field_validator("think", mode="before")
    @classmethod
    def _think(cls, value: Any) -> Any:
        if value is None or isinstance(value, bool) or value in THINK_LEVELS:
            return value
        raise invalid('invalid think value: give true, false, "low", "medium", "high" or "max"')

    @field_validator("format", mode="before")
    @classmethod
    def _format(cls, value: Any) -> Any:
        if value is None or isinstance(value, dict) or value in ("", "json"):
            return value
        raise invalid('invalid format: give "json" or a JSON schema object')


class ChatRequest(GeneratingFields):
    messages: list[Message] = Field(default_factory=list, max_length=MAX_MESSAGES,
                                    description="empty: load the model (with keep_alive 0: unload it)")
    tools: list[Tool] | None = Field(default=None, max_length=MAX_TOOLS)


class GenerateRequest(GeneratingFields):
    prompt: str | None = Field(default="", description="empty: load the model (with keep_alive 0: unload it)")
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    images: list[str] | None = None


class EmbedRequest(_Named):
    input: str | list[str] = Field(description=f"a string or up to {MAX_EMBED_INPUTS} of them")
    truncate: bool = True
    dimensions: int | None = Field(default=None, ge=1, le=INT32_MAX)
    options: dict[str, Any] | None = None
    keep_alive: Any = None

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _keep_alive(cls, value: Any) -> str | None:
        return keep_alive_text(value)

    @field_validator("input")
    @classmethod
    def _inputs(cls, value: str | list[str]) -> list[str]:
        items = [value] if isinstance(value, str) else value
        if not items:
            raise invalid("give at least one string")
        if len(items) > MAX_EMBED_INPUTS:
            raise invalid(f"give at most {MAX_EMBED_INPUTS} inputs, not {len(items)}")
        if any(item == "" for item in items):
            raise invalid("an input is empty: every input needs some text")
        return items


class EmbeddingsRequest(_Named):
    """The older /api/embeddings: one prompt, one vector."""

    prompt: str = ""
    options: dict[str, Any] | None = None
    keep_alive: Any = None

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _keep_alive(cls, value: Any) -> str | None:
        return keep_alive_text(value)


class ShowRequest(_Named):
    verbose: bool = False


class DeleteRequest(_Named):
    pass


class CopyRequest(_Request):
    source: str = MODEL_FIELD
    destination: str = MODEL_FIELD


class TransferRequest(_Named):
    """/api/pull and /api/push."""

    insecure: bool = Field(default=False, description="allow plain HTTP to this registry")
    stream: bool = True


MAX_CREATE_FILES = 64
# What /api/create may carry that a model here cannot keep: the Runner renders the GGUF's own (Jinja)
# chat template and takes sampling per request, so these are refused by name rather than dropped.
CREATE_UNSUPPORTED = ("modelfile", "quantize", "adapters", "template", "license", "system", "parameters",
                      "messages")


class CreateRequest(_Named):
    """/api/create: a new name for a local model (`from`), or a model packaged from GGUF blobs uploaded
    with `POST /api/blobs/<digest>` (`files`: file name -> digest), as `ollama create` sends them."""

    from_: str | None = Field(default=None, alias="from", min_length=1, max_length=1024)
    files: dict[str, str] | None = Field(default=None, max_length=MAX_CREATE_FILES)
    stream: bool = True
    modelfile: Any = None
    quantize: Any = None
    adapters: Any = None
    template: Any = None
    license: Any = None
    system: Any = None
    parameters: Any = None
    messages: Any = None

    def unsupported(self) -> str | None:
        """The first field given that no model here can keep (empty values count as not given)."""
        return next((name for name in CREATE_UNSUPPORTED if getattr(self, name) not in (None, "", [], {})), None)


class OllamaErrorBody(BaseModel):
    """Every Ollama route's error answer."""

    error: str
