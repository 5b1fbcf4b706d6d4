"""Request bodies of the OpenAI Responses API (`POST /v1/responses`).

Pydantic checks the types and ranges (a wrong one is a 400 naming the field); the input items are
checked on translation (responses_convert), so those errors name the item. Unknown fields are ignored.

Where a field takes a string or a list, the list comes first in the union, so that a bad item is
reported where it is (`input[2].role`), not as "should be a valid string".
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from modelrunner.gateway.openai_models import INT32_MAX, MAX_MESSAGES, MAX_TOOLS, NAME, Lenient, RequestBody, invalid

# OpenAI's limits for `metadata`; a stored Response keeps it, so unbounded it would fill the gateway's memory.
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages: null, not NoneType."""
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def list_or_text(value: Any, what: str, allow_none: bool = False) -> Any:
    """Refuses, with what to give instead, a value that is neither text nor a list."""
    if isinstance(value, (str, list)) or (allow_none and value is None):
        return value
    raise invalid(f"give a string or a list of {what}, not {json_type(value)}")


class ContentPart(Lenient):
    type: str = Field(max_length=64)
    text: str | None = None


class InputItem(Lenient):
    """A message (with a role), a function_call or a function_call_output; checked on translation."""

    type: str = Field(default="message", max_length=64)
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: list[ContentPart] | str | None = None
    id: str | None = Field(default=None, max_length=256)
    call_id: str | None = Field(default=None, max_length=256)
    name: str | None = Field(default=None, max_length=256)
    arguments: str | None = None
    output: list[ContentPart] | str | None = None

    @field_validator("content", "output", mode="before")
    @classmethod
    def _parts(cls, value: Any) -> Any:
        return list_or_text(value, "content parts", allow_none=True)


class FunctionTool(Lenient):
    type: str = Field(max_length=64, description='"function"; built-in tools are not supported')
    name: str | None = Field(default=None, pattern=NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedToolChoice(Lenient):
    type: Literal["function"]
    name: str = Field(pattern=NAME)


class TextFormat(Lenient):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(default=None, max_length=256)
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextOptions(Lenient):
    format: TextFormat | None = None


class ResponsesRequest(RequestBody):
    model: str = Field(min_length=1, max_length=1024)
    input: list[InputItem] | str = Field(description="a user message's text, or a list of input items")
    instructions: str | None = None
    previous_response_id: str | None = Field(default=None, max_length=256)
    max_output_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    tools: list[FunctionTool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextOptions | None = None
    store: bool = True
    stream: bool = False
    background: bool = False
    conversation: Any = Field(default=None, description="not supported: chain turns with previous_response_id")
    prompt: Any = Field(default=None, description="not supported: stored prompt templates live on OpenAI's servers")
    metadata: dict[str, str] | None = None
    user: str | None = Field(default=None, max_length=256)

    @field_validator("input", mode="before")
    @classmethod
    def _items(cls, value: Any) -> Any:
        """Counted before the items are validated, so that a huge list is refused at once."""
        if isinstance(value, list) and not 0 < len(value) <= MAX_MESSAGES:
            raise invalid(f"give from 1 to {MAX_MESSAGES} input items, not {len(value)}")
        return list_or_text(value, "input items")

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        if len(value) > MAX_METADATA_PAIRS:
            raise invalid(f"give at most {MAX_METADATA_PAIRS} key-value pairs, not {len(value)}")
        for key, text in value.items():
            if len(key) > MAX_METADATA_KEY_CHARS:
                raise invalid(f"keys are at most {MAX_METADATA_KEY_CHARS} characters, not {len(key)} ({key[:20]!r}...)")
            if len(text) > MAX_METADATA_VALUE_CHARS:
                raise invalid(f"values are at most {MAX_METADATA_VALUE_CHARS} characters; {key!r} has {len(text)}")
        return value


class InputItemsQuery(Lenient):
    """`GET /v1/responses/{id}/input_items` paging, as OpenAI's lists page."""

    limit: int = Field(default=20, ge=1, le=100)
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None
    before: str | None = None
