"""Tool calls recognised in answers, and returned by Generate when the request offered tools."""

from __future__ import annotations

import json

import pytest

from modelrunner.runner.held_answer import AnswerRelay, tools_offered
from modelrunner.runner.tool_calls import parse_tool_calls
from modelrunner.v1 import runner_pb2
from tests.support.runner_doubles import chat_request


@pytest.mark.parametrize(
    "answer",
    [
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>',
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}]',
        '{"name": "get_weather", "parameters": {"city": "Paris"}}',
        '[{"type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}}]',
    ],
)
def test_common_conventions_are_recognised(answer: str) -> None:
    content, calls = parse_tool_calls(answer)
    assert content == ""
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert calls[0].id.startswith("call_")


@pytest.mark.parametrize("answer", ["It is sunny in Paris.", '{"city": "Paris"}', "<tool_call>not json</tool_call>", "[1, 2]"])
def test_plain_answers_stay_text(answer: str) -> None:
    assert parse_tool_calls(answer) == (answer, [])


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
CALL_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"enum": ["get_weather"]},
        "arguments": {
            "type": "object",
            "properties": {"city": {"enum": ["Paris"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "arguments"],
    "additionalProperties": False,
}


async def test_generate_returns_tool_calls_when_tools_were_offered(runner):
    stub, _ = runner
    request = chat_request(max_tokens=120)
    request.chat.tools_json = json.dumps(TOOLS)
    # The grammar makes even the random tiny model answer with a call.
    request.response_format.type = "json_schema"
    request.response_format.json_schema = json.dumps(CALL_SCHEMA)
    chunks = [c async for c in stub.Generate(request)]
    last = chunks[-1]
    assert last.finish_reason == "tool_calls", [c.text for c in chunks]
    assert [(c.name, json.loads(c.arguments)) for c in last.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert last.usage.completion_tokens > 0


async def test_tool_choice_none_streams_plain_text(runner):
    """The answer with tool_choice "none" is the plain answer, not tool calls; that it is streamed (not
    held) is what AnswerRelay decides, tested below without depending on how chunks coalesce."""
    stub, _ = runner
    plain = [c async for c in stub.Generate(chat_request(max_tokens=6, ignore_eos=True))]
    request = chat_request(max_tokens=6, ignore_eos=True)
    request.chat.tools_json = json.dumps(TOOLS)
    request.chat.tool_choice_json = '"none"'
    assert not tools_offered(request)
    chunks = [c async for c in stub.Generate(request)]
    assert chunks[-1].finish_reason == "length" and not chunks[-1].tool_calls
    assert "".join(c.text for c in chunks) == "".join(c.text for c in plain)


def test_deltas_pass_at_once_unless_tools_are_offered():
    streamed = AnswerRelay(hold=False)
    assert [streamed.delta(t) for t in ("Hel", "lo")] == ["Hel", "lo"]  # before the final chunk
    last = runner_pb2.GenerateChunk(text=streamed.delta("!"), finish_reason="length")
    streamed.finish(last)
    assert (last.text, last.finish_reason) == ("!", "length")

    held = AnswerRelay(hold=True)
    assert [held.delta(t) for t in ('{"name": "get_weather", ', '"arguments": {}}')] == ["", ""]
    last = runner_pb2.GenerateChunk(text=held.delta(""), finish_reason="stop")
    held.finish(last)
    assert last.finish_reason == "tool_calls" and [c.name for c in last.tool_calls] == ["get_weather"]
