"""Ollama's API through the real `ollama` client from PyPI, over HTTP, against the real stack (gateway,
Store, Distribution, Runner processes) with the tiny GGUF, and a real docker-registry for push and pull;
the real Gemma 3 270M where real text matters (slow)."""

from __future__ import annotations

import httpx
import ollama
import pytest

from tests.support.stack import Stack, serving
from tests.support.packaging import package as upload
from tests.support.tiny_gguf import write_tiny_gguf

GREEDY = {"temperature": 0, "num_predict": 8}
HI = [{"role": "user", "content": "hi"}]


def package(stack: Stack, gguf, name: str) -> None:
    upload(stack.url, gguf, name)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_gguf):
    with serving(tmp_path_factory.mktemp("ollama-api"), {"ai/tiny": tiny_gguf}) as running:
        yield running


def assert_timings(final) -> None:
    """Real measurements: nanoseconds that add up, and the token counts the Runner reported."""
    assert final.done and final.done_reason in ("stop", "length")
    assert final.prompt_eval_count > 0 and final.eval_count > 0
    assert final.prompt_eval_duration > 0 and final.eval_duration >= 0 and final.load_duration > 0
    assert final.total_duration >= final.load_duration + final.prompt_eval_duration + final.eval_duration


def test_version_list_show_and_ps(ollama_client, stack):
    assert httpx.head(f"{stack.url}/api/version").status_code == 200
    assert httpx.get(f"{stack.url}/api/version").json()["version"]
    names = {m.model: m for m in ollama_client.list().models}
    tiny = names["ai/tiny:latest"]
    assert tiny.details.family == "llama" and tiny.details.format == "gguf" and tiny.size > 0
    assert len(tiny.digest) == 64 and tiny.modified_at is not None
    shown = ollama_client.show("tiny")
    assert shown.details.family == "llama" and shown.modelinfo["general.architecture"] == "llama"
    assert "completion" in shown.capabilities
    ollama_client.generate(model="tiny", prompt="x", options={"num_predict": 1})
    running = {m.model: m for m in ollama_client.ps().models}
    assert running["ai/tiny:latest"].size > 0 and running["ai/tiny:latest"].context_length > 0
    assert running["ai/tiny:latest"].expires_at is not None


def test_chat_streamed_and_not_agree(ollama_client):
    whole = ollama_client.chat(model="tiny", messages=HI, options=GREEDY)
    assert whole.message.role == "assistant" and isinstance(whole.message.content, str)
    assert_timings(whole)
    parts = list(ollama_client.chat(model="tiny", messages=HI, options=GREEDY, stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    assert_timings(parts[-1])
    assert parts[-1].eval_count == whole.eval_count


def test_generate_streamed_and_not_and_raw(ollama_client):
    whole = ollama_client.generate(model="ai/tiny", prompt="Once upon", options=GREEDY)
    assert_timings(whole)
    streamed = "".join(p.response for p in ollama_client.generate(model="ai/tiny", prompt="Once upon", options=GREEDY,
                                                           stream=True))
    assert streamed == whole.response
    raw = ollama_client.generate(model="tiny:latest", prompt="Once upon", raw=True, options={**GREEDY, "num_predict": 3})
    assert raw.eval_count <= 3 and raw.done_reason in ("stop", "length")


def test_json_format_and_tool_calls(ollama_client):
    """A schema makes even the random tiny model answer with a call, as Ollama shapes it."""
    schema = {
        "type": "object",
        "properties": {
            "name": {"enum": ["get_weather"]},
            "arguments": {"type": "object", "properties": {"city": {"enum": ["Paris"]}}, "required": ["city"],
                          "additionalProperties": False},
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }
    parameters = {"type": "object", "properties": {"city": {"type": "string"}}}
    tools = [{"type": "function",
              "function": {"name": "get_weather", "description": "weather of a city", "parameters": parameters}}]
    long = {"temperature": 0, "num_predict": 120}
    reply = ollama_client.chat(model="tiny", messages=HI, tools=tools, format=schema, options=long)
    call = reply.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Paris"}
    followup = [*HI, reply.message, {"role": "tool", "content": "sunny", "tool_name": "get_weather"}]
    answer = ollama_client.chat(model="tiny", messages=followup, tools=tools, options=GREEDY)
    assert answer.done
    streamed = list(ollama_client.chat(model="tiny", messages=HI, tools=tools, format=schema, stream=True, options=long))
    calls = [c for p in streamed for c in (p.message.tool_calls or [])]
    assert calls and calls[0].function.arguments == {"city": "Paris"}


def test_embed_and_the_older_embeddings(ollama_client):
    embedded = ollama_client.embed(model="tiny", input=["hello", "world"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) > 0 and embedded.prompt_eval_count > 0
    older = ollama_client.embeddings(model="tiny", prompt="hello")
    assert older.embedding == pytest.approx(embedded.embeddings[0], abs=1e-5)


def test_embed_truncates_an_input_longer_than_the_context_unless_told_not_to(ollama_client):
    """Ollama's `truncate` (true by default) cuts an input to the context's first tokens; false
    refuses it with 400, naming the input."""
    long_text = "hello world " * 2000  # far past the tiny model's 512-token context
    cut = ollama_client.embed(model="tiny", input=[long_text, "hello"])
    assert len(cut.embeddings) == 2 and 0 < cut.prompt_eval_count <= 2 * 512  # each input at most the context
    with pytest.raises(ollama.ResponseError) as err:
        ollama_client.embed(model="tiny", input=["hello", long_text], truncate=False)
    assert err.value.status_code == 400 and "inputs[1]" in str(err.value)


def test_megabytes_to_embed_are_cut_or_refused_without_tokenizing_them_whole(ollama_client):
    """3 MB cannot fit 512 tokens by the vocabulary's bound: cut by bytes to a start that still holds
    more than the context (the same embedding as the token cut of a shorter text), or refused at once."""
    huge, long_text = "hello world " * 250_000, "hello world " * 2000
    cut, reference = ollama_client.embed(model="tiny", input=[huge, long_text]).embeddings
    assert cut == pytest.approx(reference, abs=1e-5)
    with pytest.raises(ollama.ResponseError) as err:
        ollama_client.embed(model="tiny", input=["hello", huge], truncate=False)
    assert err.value.status_code == 400 and "inputs[1]" in str(err.value) and "at least" in str(err.value)


def test_load_and_unload_by_keep_alive(ollama_client):
    assert ollama_client.generate(model="tiny", keep_alive=-1).done_reason == "load"
    assert any(m.model == "ai/tiny:latest" for m in ollama_client.ps().models)
    assert ollama_client.chat(model="tiny", messages=[], keep_alive=0).done_reason == "unload"
    assert not any(m.model == "ai/tiny:latest" for m in ollama_client.ps().models)


def test_errors_are_ollamas(ollama_client, stack):
    with pytest.raises(ollama.ResponseError) as missing:
        ollama_client.chat(model="absent", messages=HI)
    assert missing.value.status_code == 404 and "model 'absent' not found" in missing.value.error
    with pytest.raises(ollama.ResponseError) as streamed:
        list(ollama_client.generate(model="absent", prompt="x", stream=True))
    assert streamed.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as bad:
        ollama_client.chat(model="tiny", messages=HI, options={"top_k": -3})
    assert bad.value.status_code == 400 and "options.top_k" in bad.value.error
    with pytest.raises(ollama.ResponseError) as think:
        ollama_client.chat(model="tiny", messages=HI, think=True)
    assert think.value.status_code == 400 and "does not support thinking" in think.value.error
    with pytest.raises(ollama.ResponseError) as gone:
        ollama_client.show("absent")
    assert gone.value.status_code == 404
    raw = httpx.post(f"{stack.url}/api/chat", content=b"{", headers={"content-type": "application/json"})
    assert raw.status_code == 400 and set(raw.json()) == {"error"}


def test_copy_push_delete_pull_through_a_real_registry(ollama_client, stack, registry, tmp_path):
    """A model of its own (no blob shared with ai/tiny): pushed, deleted with its blobs, pulled back."""
    other = write_tiny_gguf(tmp_path / "other.gguf", seed=1)
    package(stack, other, "ai/other")
    remote = f"{registry.host}/team/other:v1"
    ollama_client.copy("other", remote)
    pushed = list(ollama_client.push(remote, stream=True))
    statuses = [p.status for p in pushed]
    assert statuses[0] == "retrieving manifest" and statuses[-2:] == ["pushing manifest", "success"]
    layers = [p for p in pushed if p.digest]
    assert layers and all(p.status == f"pushing {p.digest[7:19]}" for p in layers)
    ollama_client.delete(remote)
    ollama_client.delete("other")
    assert not {"ai/other:latest", remote} & {m.model for m in ollama_client.list().models}
    pulled = list(ollama_client.pull(remote, stream=True))
    assert pulled[0].status == "pulling manifest" and pulled[-1].status == "success"
    layers = [p for p in pulled if p.digest]
    assert layers and layers[-1].completed == layers[-1].total > 0
    assert all(p.status == f"pulling {p.digest[7:19]}" for p in layers)
    assert remote in {m.model for m in ollama_client.list().models}
    assert ollama_client.chat(model=remote, messages=HI, options=GREEDY).done
    assert ollama_client.pull(remote).status == "success"  # present: nothing to transfer
    with pytest.raises(ollama.ResponseError) as missing:
        ollama_client.pull(f"{registry.host}/team/absent:v1")
    assert missing.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as gone:
        ollama_client.delete("ai/never-there")
    assert gone.value.status_code == 404


@pytest.mark.slow
def test_gemma_by_the_names_ollama_users_type(ollama_client, stack, gemma_gguf):
    package(stack, gemma_gguf, "ai/gemma3")
    count = {"temperature": 0, "num_predict": 6}
    reply = ollama_client.generate(model="gemma3", prompt="1, 2, 3, 4, 5,", raw=True, options=count)
    assert reply.response.startswith(" 6, 7") and reply.model == "gemma3"
    assert_timings(reply)
    again = ollama_client.generate(model="gemma3:latest", prompt="1, 2, 3, 4, 5,", raw=True, options=count, stream=True)
    assert "".join(p.response for p in again) == reply.response
    chat = ollama_client.chat(model="ai/gemma3", messages=[{"role": "user", "content": "Count from one to five."}],
                       options={"temperature": 0, "num_predict": 16})
    assert chat.message.content.strip() and chat.eval_count > 0
    assert_timings(chat)
    assert ollama_client.show("gemma3").details.family == "gemma3"
    assert any(m.model == "ai/gemma3:latest" and m.details.parameter_size == "268.10M" for m in ollama_client.ps().models)


def test_an_unknown_ollama_path_or_method_answers_in_ollamas_error_shape(stack: Stack):
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        for reply in (http.get("/api/no-such-route"), http.get("/api/chat")):
            assert reply.status_code in (404, 405) and isinstance(reply.json()["error"], str), reply.text
