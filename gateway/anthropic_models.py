"""Request bodies of the Anthropic Messages API (`/v1/messages`, `/v1/messages/count_tokens`).

Pydantic checks the types and the ranges the Runner's contract can carry (a wrong one is a 400 naming
the field); which block may stand where is checked when the request is translated (anthropic_convert),
so those errors name the block too. Unknown fields are ignored.

Content is a list of blocks or a string: the list comes first in each union, so that a bad block is
reported where it is (`messages[0].content[1].input`), not as "should be a valid string".
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from modelrunner.gateway.openai_models import (
    INT32_MAX,
    MAX_MESSAGES,
    MAX_STOP,
    MAX_STOP_CHARS,
    MAX_TOOLS,
    NAME,
    Lenient,
    RequestBody,
    invalid,
)
from modelrunner.gateway.responses_models import list_or_text


class ContentBlock(Lenient):
    """Any content block; the fields its `type` needs are checked on translation."""

    type: str = Field(max_length=64)
    text: str | None = None
    id: str | None = Field(default=None, max_length=256)  # tool_use
    name: str | None = Field(default=None, max_length=256)  # tool_use
    input: dict[str, Any] | None = None  # tool_use
    tool_use_id: str | None = Field(default=None, max_length=256)  # tool_result
    content: list[ContentBlock] | str | None = None  # tool_result
    is_error: bool | None = None  # tool_result

    @field_validator("content", mode="before")
    @classmethod
    def _content(cls, value: Any) -> Any:
        return list_or_text(value, "content blocks", allow_none=True)


class Message(Lenient):
    role: Literal["user", "assistant"]
    content: list[ContentBlock] | str

    @field_validator("content", mode="before")
    @classmethod
    def _content(cls, value: Any) -> Any:
        return list_or_text(value, "content blocks")


class Tool(Lenient):
    name: str = Field(pattern=NAME, description="1 to 64 letters, digits, _ . : -")
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    type: str | None = Field(default=None, description='"custom" or absent; server tools are not supported')


class ToolChoice(Lenient):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = Field(default=None, max_length=256, description='the tool to call, for type "tool"')
    disable_parallel_tool_use: bool | None = None


class OutputFormat(Lenient):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(Lenient):
    format: OutputFormat | None = Field(default=None, description="structured output: the answer follows the schema")
    effort: str | None = Field(default=None, max_length=16, description="accepted and ignored")


class CountTokensRequest(RequestBody):
    model: str = Field(min_length=1, max_length=1024)
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    system: list[ContentBlock] | str | None = None
    tools: list[Tool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None

    @field_validator("system", mode="before")
    @classmethod
    def _system(cls, value: Any) -> Any:
        return list_or_text(value, "content blocks", allow_none=True)


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1, le=INT32_MAX)
    stop_sequences: list[str] | None = Field(
        default=None, max_length=MAX_STOP,
        description=f"up to {MAX_STOP} strings of at most {MAX_STOP_CHARS} characters",
    )
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0, le=INT32_MAX)
    metadata: dict[str, Any] | None = None
    output_config: OutputConfig | None = None

    @field_validator("stop_sequences")
    @classmethod
    def _stop_length(cls, value: list[str] | None) -> list[str] | None:
        if any(len(stop) > MAX_STOP_CHARS for stop in value or ()):
            raise invalid(f"a stop sequence may have at most {MAX_STOP_CHARS} characters")
        return value
