"""Tool-call holding: with tools offered, an answer is held until it is complete, because only then
can it be told apart from a tool call; otherwise every delta is sent as it comes."""

from __future__ import annotations

from modelrunner.runner.tool_calls import parse_tool_calls
from modelrunner.v1 import runner_pb2


def tools_offered(request: runner_pb2.GenerateRequest) -> bool:
    if request.WhichOneof("input") != "chat" or not request.chat.tools_json:
        return False
    return request.chat.tool_choice_json.strip() != '"none"'


class AnswerRelay:
    """Decides what text each chunk of one answer carries."""

    def __init__(self, hold: bool) -> None:
        self._held: list[str] | None = [] if hold else None

    def delta(self, text: str) -> str:
        """The text to send now for a new delta."""
        if self._held is None:
            return text
        self._held.append(text)
        return ""

    def finish(self, last: runner_pb2.GenerateChunk) -> None:
        """Completes the last chunk (its own delta already passed through `delta`): a held answer
        goes in it, as tool calls when it is made of them."""
        if self._held is None:
            return
        content, calls = parse_tool_calls("".join(self._held))
        last.text = content
        if calls:
            last.finish_reason = "tool_calls"
            last.tool_calls.extend(
                runner_pb2.ToolCall(id=c.id, type="function", name=c.name, arguments=c.arguments) for c in calls
            )
