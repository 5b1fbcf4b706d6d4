"""Request bodies of the OpenAI Responses API (`POST /v1/responses`).

Pydantic checks the types and ranges (a wrong one is a 400 naming the field); the input items are
checked on translation (responses_convert), so those errors name the item. Unknown fields are ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from modelrunner.gateway.openai_models import INT32_MAX, MAX_MESSAGES, MAX_TOOLS, NAME, Lenient, RequestBody, invalid

# OpenAI's limits for `metadata`; a stored Response keeps it, so unbounded it would fill the gateway's memory.
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512


class ContentPart(Lenient):
    type: str = Field(max_length=64)
    text: str | None = None


class InputItem(Lenient):
    """A message (with a role), a function_call or a function_call_output; checked on translation."""

    type: str = Field(default="message", max_length=64)
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: str | list[ContentPart] | None = None
    id: str | None = Field(default=None, max_length=256)
    call_id: str | None = Field(default=None, max_length=256)
    name: str | None = Field(default=None, max_length=256)
    arguments: str | None = None
    output: str | list[ContentPart] | None = None


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
    input: str | list[InputItem] = Field(description="a user message's text, or a list of input items")
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
    metadata: dict[str, str] | None = None
    user: str | None = Field(default=None, max_length=256)

    @field_validator("input")
    @classmethod
    def _count(cls, value: str | list[InputItem]) -> str | list[InputItem]:
        if isinstance(value, list) and not 0 < len(value) <= MAX_MESSAGES:
            raise invalid(f"give from 1 to {MAX_MESSAGES} input items, not {len(value)}")
        return value

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
