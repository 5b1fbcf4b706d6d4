"""The OpenAI Responses API through the real `openai` client, over HTTP, against the real stack (Store,
Distribution, Runner, gateway processes) with the tiny GGUF, and Gemma 3 270M where the text matters.
The gateway keeps its stored responses on disk, so they outlive a restart of it."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.support.stack import serving
from tests.support.packaging import package

GREEDY = {"model": "ai/tiny", "temperature": 0}
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city", "strict": True,
           "parameters": {"type": "object", "properties": {"city": {"enum": ["Paris"]}}, "required": ["city"],
                          "additionalProperties": False}}
YES_OR_NO = {"type": "json_schema", "name": "answer", "schema": {
    "type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"],
    "additionalProperties": False}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_gguf):
    workdir = tmp_path_factory.mktemp("responses-api")
    env = {"MODELRUNNER_DATA_DIR": str(workdir / "data"), "MODELRUNNER_RESPONSES_PERSIST": "true"}
    with serving(workdir, {"ai/tiny": tiny_gguf}, env) as running:
        yield running


@pytest.fixture
def client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0)


def test_response_streamed_and_not(client):
    whole = client.responses.create(**GREEDY, input="hi", max_output_tokens=8)
    assert whole.object == "response" and whole.status in ("completed", "incomplete")
    assert whole.model == "ai/tiny:latest" and whole.output[0].type == "message"
    usage = whole.usage
    assert usage.output_tokens > 0 and usage.total_tokens == usage.input_tokens + usage.output_tokens
    events = list(client.responses.create(**GREEDY, input="hi", max_output_tokens=8, stream=True))
    assert [e.type for e in events[:2]] == ["response.created", "response.in_progress"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1]
    assert final.type in ("response.completed", "response.incomplete")
    assert text == final.response.output_text == whole.output_text  # greedy: streamed and whole agree


def test_the_stream_helper_and_other_prefixes(stack):
    """The SDK's helper wants `response.completed`: a schema makes the tiny model end its answer."""
    done = {**GREEDY, "input": "yes or no?", "max_output_tokens": 32, "text": {"format": YES_OR_NO}}
    for base in (stack.url, f"{stack.url}/engines/v1"):
        client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0)
        with client.responses.stream(**done) as stream:
            final = stream.get_final_response()
        assert final.status == "completed" and final.output_text == client.responses.create(**done).output_text


def test_a_conversation_retrieve_input_items_and_delete(client):
    first = client.responses.create(**GREEDY, input="hi", max_output_tokens=8)
    second = client.responses.create(**GREEDY, input="and then?", previous_response_id=first.id, max_output_tokens=8)
    assert second.previous_response_id == first.id
    # the second turn's prompt holds the first's, which the Runner still has in its slot
    assert first.usage.input_tokens <= second.usage.input_tokens_details.cached_tokens < second.usage.input_tokens
    assert client.responses.retrieve(second.id).model_dump() == second.model_dump()
    items = client.responses.input_items.list(second.id)
    assert [(i.type, i.role, i.content[0].text) for i in items.data] == [("message", "user", "and then?")]
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    third = client.responses.create(**GREEDY, input="more", previous_response_id=second.id, max_output_tokens=4)
    assert third.usage.input_tokens > second.usage.input_tokens  # the whole conversation, the deleted turn included


def test_store_false_is_not_kept(client):
    reply = client.responses.create(**GREEDY, input="hi", max_output_tokens=4, store=False)
    assert reply.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(reply.id)


def test_function_call_round_trip(client):
    first = client.responses.create(**GREEDY, input="What is the weather in Paris?", tools=[WEATHER],
                                    tool_choice="required", max_output_tokens=64)
    call = next(item for item in first.output if item.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    second = client.responses.create(**GREEDY, previous_response_id=first.id, tools=[WEATHER], max_output_tokens=8,
                                     input=[{"type": "function_call_output", "call_id": call.call_id,
                                             "output": "sunny, 21 C"}])
    assert second.status in ("completed", "incomplete") and second.usage.input_tokens > first.usage.input_tokens


def test_text_format_json_schema(client):
    reply = client.responses.create(**GREEDY, input="yes or no?", max_output_tokens=32, text={"format": YES_OR_NO})
    assert reply.status == "completed" and json.loads(reply.output_text)["answer"] in ("yes", "no")


def test_errors_are_openai_errors(client, stack):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(**GREEDY, input=[{"role": "user", "content": [
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}]}])
    assert caught.value.body["param"] == "input[0].content[0]" and "text-only" in caught.value.body["message"]
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(**GREEDY, input="hi", previous_response_id="resp_absent")
    assert missing.value.body["code"] == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="ai/absent", input="hi")
    reply = httpx.post(f"{stack.url}/v1/responses", json={"model": "ai/tiny", "input": "hi", "max_output_tokens": 0},
                       timeout=30)
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "max_output_tokens"


def test_stored_responses_outlive_a_gateway_restart(stack, client):
    kept = client.responses.create(**GREEDY, input="remember me", max_output_tokens=4)
    gateway = stack.procs["gateway"]
    gateway.terminate()
    assert gateway.wait(20) == 0
    stack.start(["gateway"]).wait_healthy()
    assert client.responses.retrieve(kept.id).output_text == kept.output_text
    follow = client.responses.create(**GREEDY, input="and?", previous_response_id=kept.id, max_output_tokens=4)
    assert follow.usage.input_tokens > kept.usage.input_tokens


@pytest.mark.slow
def test_gemma_answers_in_the_json_schema_asked_for(stack, gemma_gguf):
    package(f"127.0.0.1:{stack.ports['store']}", gemma_gguf, "ai/gemma3")
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0)
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}}, "required": ["city"],
              "additionalProperties": False}
    asked = {"model": "ai/gemma3", "temperature": 0, "max_output_tokens": 48, "instructions": "Answer in JSON.",
             "input": "Which city is the capital of France?",
             "text": {"format": {"type": "json_schema", "name": "city", "schema": schema}}}
    answer = client.responses.create(**asked)
    assert answer.status == "completed", answer
    assert isinstance(json.loads(answer.output_text)["city"], str)
    streamed = list(client.responses.create(**asked, stream=True))
    assert streamed[-1].response.output_text == answer.output_text
