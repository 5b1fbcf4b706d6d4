"""What a demanding client of the Anthropic Messages and OpenAI Responses surfaces meets at their edges,
through the real `anthropic` and `openai` clients (raw httpx where a client hides the answer), against
the real stack with the tiny GGUF: a bad input is a 400 naming the field to fix, not the contract's
field or a union's first guess; a field the server cannot honour is refused, not ignored; the stored
Responses are bounded by size as well as by count; a stream's message_start counts the input."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from tests.support.stack import serving

MAX_STORED_BYTES = 600_000
USER = [{"role": "user", "content": "hi"}]
BAD_SCHEMA = {"type": 5}  # the Runner refuses it when it compiles the grammar


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_gguf):
    env = {"MODELRUNNER_RESPONSES_MAX_BYTES": str(MAX_STORED_BYTES)}
    with serving(tmp_path_factory.mktemp("compat"), {"ai/tiny": tiny_gguf}, env) as running:
        yield running


def anthropic_error(claude: anthropic.Anthropic, **body) -> str:
    """The message of the 400 that `body` gets, checked to be in Anthropic's error shape."""
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(model="ai/tiny", max_tokens=2, **body)
    error = caught.value.body
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error", error
    return error["error"]["message"]


def openai_error(oai: openai.OpenAI, **body) -> dict:
    with pytest.raises(openai.BadRequestError) as caught:
        oai.responses.create(model="ai/tiny", max_output_tokens=2, **body)
    return caught.value.body


def test_a_bad_content_block_is_named_where_it_is(claude):
    tool_use = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": ["not", "an", "object"]}
    message = anthropic_error(claude, messages=[{"role": "assistant", "content": [tool_use]}, *USER])
    assert message.startswith("messages[0].content[0].input:"), message
    message = anthropic_error(claude, messages=[{"role": "user", "content": 5}])
    assert message == "messages[0].content: give a string or a list of content blocks, not a number"
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": {"text": "x"}}
    message = anthropic_error(claude, messages=[{"role": "user", "content": [result]}])
    assert message.startswith("messages[0].content[0].content: give a string or a list"), message
    message = anthropic_error(claude, messages=[{"role": "user", "content": [{"type": "text"}]}])
    assert message == "messages[0].content[0].text: a text block needs its text"
    message = anthropic_error(claude, system=[{"type": "text"}], messages=USER)
    assert message == "system[0].text: a text block needs its text"


def test_a_refused_output_schema_names_output_config(claude):
    message = anthropic_error(claude, messages=USER, output_config={"format": {"type": "json_schema",
                                                                               "schema": BAD_SCHEMA}})
    assert message.startswith("output_config.format.schema: "), message


def test_a_wrong_method_is_an_anthropic_error(stack):
    for path in ("/v1/messages", "/anthropic/v1/messages/count_tokens"):
        reply = httpx.get(f"{stack.url}{path}", timeout=30)
        assert reply.status_code == 405 and "POST" in reply.headers["allow"]
        assert reply.json()["type"] == "error" and reply.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("path", ["/v1/messages", "/anthropic/v1/messages", "/v1/messages/count_tokens",
                                  "/api/chat", "/v1/chat/completions"])
def test_the_edge_refuses_in_the_shape_of_the_surface(stack, path):
    """The middleware answers before any route runs (a wrong Content-Type, a repeated Origin): in
    OpenAI's shape on every path, it was, which the Anthropic and Ollama SDKs do not parse."""
    typed = httpx.post(f"{stack.url}{path}", content=b"{}", headers={"content-type": "text/plain"}, timeout=30)
    repeated = httpx.post(f"{stack.url}{path}", json={}, headers=[("origin", stack.url), ("origin", stack.url)],
                          timeout=30)
    curl = httpx.post(f"{stack.url}{path}", content=b"{}", timeout=30,
                      headers={"content-type": "application/x-www-form-urlencoded"})
    assert "with curl, add -H 'Content-Type: application/json'" in curl.text
    for reply, status in ((typed, 415), (repeated, 400), (curl, 415)):
        assert reply.status_code == status, reply.text
        body = reply.json()
        if path.startswith("/api/"):
            assert isinstance(body["error"], str) and body["error"], body
        elif "/messages" in path:
            assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error", body
            assert body["error"]["message"], body
        else:
            assert body["error"]["type"] == "invalid_request_error" and body["error"]["message"], body


def test_a_bad_input_item_is_named_where_it_is(oai, stack):
    error = openai_error(oai, input=[{"role": "bogus", "content": "x"}])
    assert error["param"] == "input[0].role", error
    error = openai_error(oai, input=[{"role": "user", "content": "x"}, {"role": "user", "content": 5}])
    assert error["param"] == "input[1].content" and "give a string or a list of content parts" in error["message"]
    error = openai_error(oai, input=[{"role": "user", "content": [{"type": "input_text"}]}])
    assert error["param"] == "input[0].content[0].text" and "needs its text" in error["message"], error
    reply = httpx.post(f"{stack.url}/v1/responses", json={"model": "ai/tiny", "input": None}, timeout=30)
    assert reply.status_code == 400
    assert reply.json()["error"]["message"] == "input: give a string or a list of input items, not null"
    many = [{"role": "user", "content": "x"}] * 4097
    error = openai_error(oai, input=many)
    assert error["param"] == "input" and "4097" in error["message"]


def test_a_refused_text_format_schema_names_text_format(oai):
    error = openai_error(oai, input="hi", text={"format": {"type": "json_schema", "name": "x", "schema": BAD_SCHEMA}})
    assert error["param"] == "text.format.schema" and error["message"].startswith("text.format.schema: "), error


def test_fields_the_server_cannot_honour_are_refused(oai):
    error = openai_error(oai, input="hi", conversation="conv_123")
    assert error["param"] == "conversation" and "previous_response_id" in error["message"]
    error = openai_error(oai, input="hi", prompt={"id": "pmpt_123"})
    assert error["param"] == "prompt"


def test_the_stored_responses_are_bounded_by_size(oai):
    """Each Response keeps its tools: a few of a quarter megabyte each fill the store's bound."""
    def answer(size: int) -> str:
        tool = {"type": "function", "name": "f", "description": "x" * size, "parameters": {"type": "object"}}
        return oai.responses.create(model="ai/tiny", input="hi", max_output_tokens=1, tools=[tool]).id

    first, second, third = (answer(MAX_STORED_BYTES * 2 // 5) for _ in range(3))
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(first)  # the oldest went first
    assert oai.responses.retrieve(second).id == second and oai.responses.retrieve(third).id == third
    too_large = answer(MAX_STORED_BYTES)
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(too_large)
    assert oai.responses.retrieve(second).id == second  # one too large for the bound evicts nothing


def test_message_start_counts_the_input_and_usage_is_counted_once(claude, oai):
    """The Runner counts the prompt on its first chunk too: Anthropic's message_start reported 0 input
    tokens. The other surfaces read the last chunk's usage: the same counts as a whole answer's."""
    with claude.messages.stream(model="ai/tiny", max_tokens=4, messages=USER) as stream:
        starts = [e.message.usage for e in stream if e.type == "message_start"]
        final = stream.get_final_message()
    assert len(starts) == 1 and starts[0].output_tokens == 0
    opening = starts[0].input_tokens + starts[0].cache_read_input_tokens
    assert opening > 0 and opening == final.usage.input_tokens + final.usage.cache_read_input_tokens
    assert final.usage.output_tokens > 0
    whole = oai.chat.completions.create(model="ai/tiny", max_tokens=4, messages=USER)
    streamed = [c.usage for c in oai.chat.completions.create(
        model="ai/tiny", max_tokens=4, messages=USER, stream=True, stream_options={"include_usage": True}) if c.usage]
    assert len(streamed) == 1 and streamed[0].prompt_tokens == whole.usage.prompt_tokens == opening
    answered = oai.responses.create(model="ai/tiny", max_output_tokens=4, input="hi")
    assert answered.usage.input_tokens == opening
