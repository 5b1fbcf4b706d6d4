"""Ollama compatibility found by an audit with the real `ollama` client (and raw HTTP where the client
hides the behaviour) against the real stack and the tiny GGUF: the CLI's heartbeat, JSON nulls read as
Go reads them, `ollama create` (from a local model, or from uploaded GGUF blobs), the engine's own
timings, and an over-long chat cut to fit the context as Ollama cuts it."""

from __future__ import annotations

import hashlib
import json
import time

import grpc
import httpx
import ollama
import pytest

from modelrunner.v1 import runner_pb2, runner_pb2_grpc

from tests.support.stack import serving
from tests.support.tiny_gguf import write_tiny_gguf

HI = [{"role": "user", "content": "hi"}]
SHORT = {"temperature": 0, "num_predict": 2}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_gguf):
    with serving(tmp_path_factory.mktemp("ollama-compat"), {"ai/tiny": tiny_gguf}) as running:
        yield running


def ndjson(reply: httpx.Response) -> list[dict]:
    assert reply.status_code == 200, reply.text
    return [json.loads(line) for line in reply.text.splitlines() if line]


def test_head_root_is_ollamas_heartbeat(stack):
    """`ollama list`, `ollama run` ... first send `HEAD /`; a 405 there reads as "server not running"."""
    assert httpx.head(f"{stack.url}/").status_code == 200


def test_a_null_field_is_an_absent_one_as_go_reads_it(stack):
    with httpx.Client(base_url=stack.url, timeout=120) as http:
        streamed = ndjson(http.post("/api/chat", json={"model": "tiny", "messages": HI, "stream": None,
                                                       "options": {**SHORT, "stop": None}, "format": None}))
        assert streamed[-1]["done"] is True and streamed[-1]["eval_count"] > 0
        assert all(line["done"] is False for line in streamed[:-1])
        loaded = http.post("/api/chat", json={"model": "tiny", "messages": None, "stream": False})
        assert loaded.status_code == 200 and loaded.json()["done_reason"] == "load"
        message = {"role": "user", "content": None, "images": None, "tool_calls": None}
        answered = http.post("/api/generate", json={"model": "tiny", "prompt": "hi", "stream": False, "system": None,
                                                    "images": None, "keep_alive": None, "options": SHORT})
        assert answered.status_code == 200 and answered.json()["done"] is True
        chat = http.post("/api/chat", json={"model": "tiny", "messages": [message], "stream": False, "options": SHORT})
        assert chat.status_code == 200 and chat.json()["done"] is True


def test_create_names_a_local_model_anew(ollama_client):
    statuses = [p.status for p in ollama_client.create(model="tiny-copy:v1", from_="tiny", stream=True)]
    assert statuses[-1] == "success"
    assert ollama_client.create(model="tiny-copy2", from_="ai/tiny:latest").status == "success"
    names = {m.model for m in ollama_client.list().models}
    assert {"ai/tiny-copy:v1", "ai/tiny-copy2:latest"} <= names
    assert ollama_client.chat(model="tiny-copy:v1", messages=HI, options=SHORT).done


def test_create_packages_an_uploaded_gguf(ollama_client, stack, tmp_path):
    """What `ollama create -f Modelfile` with `FROM ./model.gguf` sends: the blob, then `files`."""
    gguf = write_tiny_gguf(tmp_path / "own.gguf", seed=5)
    digest = ollama_client.create_blob(gguf)
    assert httpx.head(f"{stack.url}/api/blobs/{digest}").status_code == 200
    assert httpx.head(f"{stack.url}/api/blobs/sha256-{digest[7:]}").status_code == 200  # Ollama's file naming
    assert httpx.head(f"{stack.url}/api/blobs/sha256:{'0' * 64}").status_code == 404
    statuses = [p.status for p in ollama_client.create(model="own", files={"own.gguf": digest}, stream=True)]
    assert statuses[-1] == "success"
    assert any(m.model == "ai/own:latest" for m in ollama_client.list().models)
    assert ollama_client.show("own").details.family == "llama"
    assert ollama_client.generate(model="own", prompt="hi", options=SHORT).done


def test_create_refuses_what_it_cannot_keep_naming_the_field(ollama_client, stack):
    def refused(**kwargs) -> ollama.ResponseError:
        with pytest.raises(ollama.ResponseError) as err:
            ollama_client.create(**kwargs)
        return err.value

    system = refused(model="x", from_="tiny", system="You are terse.")
    assert system.status_code == 400 and system.error.startswith("system:")
    neither = refused(model="x")
    assert neither.status_code == 400 and "`from`" in neither.error and "`files`" in neither.error
    absent = refused(model="x", from_="never-pulled")
    assert absent.status_code == 404 and "not found" in absent.error
    unuploaded = refused(model="x", files={"m.gguf": f"sha256:{'0' * 64}"})
    assert unuploaded.status_code == 400 and "/api/blobs/" in unuploaded.error
    weights = refused(model="x", files={"model.safetensors": f"sha256:{'0' * 64}"})
    assert weights.status_code == 400 and "GGUF" in weights.error
    with httpx.Client(base_url=stack.url, timeout=60) as http:
        wrong = http.post(f"/api/blobs/sha256:{'1' * 64}", content=b"abc",
                          headers={"content-type": "application/octet-stream"})
        assert wrong.status_code == 400 and isinstance(wrong.json()["error"], str)
        bad = http.post("/api/blobs/not-a-digest", content=b"abc", headers={"content-type": "application/json"})
        assert bad.status_code == 400 and "sha256" in bad.json()["error"]
        data = b"not a model"
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        assert http.post(f"/api/blobs/{digest}", content=data,
                         headers={"content-type": "application/octet-stream"}).status_code == 201
        not_gguf = http.post("/api/create", json={"model": "x", "files": {"x.gguf": digest}})
        assert not_gguf.status_code == 400 and "GGUF" in not_gguf.json()["error"]
    assert "ai/x:latest" not in {m.model for m in ollama_client.list().models}


@pytest.mark.parametrize("stream", [False, True])
def test_eval_timings_are_the_engines_not_chunk_arrivals(ollama_client, stream):
    """Timed from chunk arrivals in the gateway, tokens that reached it in one chunk took no time: a
    4-token answer reported 117 us of evaluation (34,000 tokens/s). The engine times its decode steps."""
    options = {"temperature": 0, "num_predict": 6}
    started = time.perf_counter_ns()
    if stream:
        final = list(ollama_client.chat(model="tiny", messages=HI, options=options, stream=True))[-1]
    else:
        final = ollama_client.chat(model="tiny", messages=HI, options=options)
    wall = time.perf_counter_ns() - started
    assert final.done and final.prompt_eval_count > 0
    assert 0 < final.prompt_eval_duration <= wall
    if final.eval_count > 1:  # one token is sampled by the prefill step itself: no evaluation of its own
        assert 0 < final.eval_duration <= wall
    assert final.prompt_eval_duration + final.eval_duration <= final.total_duration <= wall


def test_the_runner_counts_the_prompt_first_and_times_the_answer_last(stack):
    """The contract the gateway's surfaces read: the prompt's counts on the first chunk (Anthropic's
    message_start), the whole usage with the engine's prefill and generation times on the last."""
    request = runner_pb2.GenerateRequest(model="docker.io/ai/tiny:latest", prompt="hi there",
                                         sampling=runner_pb2.SamplingParams(max_tokens=6, temperature=0))
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports['runner']}") as channel:
        started = time.perf_counter_ns()
        chunks = list(runner_pb2_grpc.RunnerStub(channel).Generate(request, timeout=120))
        wall = time.perf_counter_ns() - started
    first, last = chunks[0].usage, chunks[-1].usage
    assert chunks[-1].finish_reason and last.prompt_tokens > 0 and last.completion_tokens > 0
    assert (first.prompt_tokens, first.cached_prompt_tokens) == (last.prompt_tokens, last.cached_prompt_tokens)
    assert all(not c.HasField("usage") for c in chunks[1:-1])
    assert 0 < last.prompt_eval_ns <= wall and 0 <= last.eval_ns <= wall - last.prompt_eval_ns
    if last.completion_tokens > 1:
        assert last.eval_ns > 0


def _count(stack, messages: list[dict]) -> int:
    """The Runner's token count of a chat as the model's template renders it."""
    chat = runner_pb2.Chat(messages=[runner_pb2.ChatMessage(**m) for m in messages])
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports['runner']}") as channel:
        return runner_pb2_grpc.RunnerStub(channel).Tokenize(
            runner_pb2.TokenizeRequest(model="docker.io/ai/tiny:latest", chat=chat), timeout=60).count


def _conversation(turns: int) -> list[dict]:
    system = {"role": "system", "content": "You are terse."}
    history = [{"role": role, "content": f"{role} turn {i}: " + "words " * 8}
               for i in range(turns) for role in ("user", "assistant")]
    return [system, *history, {"role": "user", "content": "and now?"}]


def test_an_overlong_chat_keeps_its_system_message_and_the_latest_turns_that_fit(ollama_client, stack):
    """Ollama cuts a chat too long for the context (512 tokens here); we answered 400. The cut keeps
    the system message and the longest run of the latest turns, starting at a user message, that
    leaves room for the answer (num_predict)."""
    messages = _conversation(60)
    assert _count(stack, messages) > 512
    reply = ollama_client.chat(model="tiny", messages=messages, options={**SHORT, "num_predict": 40})
    assert reply.done
    budget = 512 - 40
    kept = next(k for k in range(len(messages) - 1, 0, -2) if _count(stack, [messages[0], *messages[-k:]]) <= budget)
    assert messages[-kept]["role"] == "user"
    assert reply.prompt_eval_count == _count(stack, [messages[0], *messages[-kept:]])  # that chat, counted
    streamed = list(ollama_client.chat(model="tiny", messages=messages, options={**SHORT, "num_predict": 40}, stream=True))
    assert streamed[-1].prompt_eval_count == reply.prompt_eval_count


def test_an_overlong_raw_prompt_keeps_its_start_token_and_its_end(ollama_client):
    """Without room for the answer's max_tokens (or, with none, a quarter of the context), a raw
    prompt keeps the BOS and as many of its last tokens as leave that room."""
    cut = ollama_client.generate(model="tiny", prompt="x" * 2000, raw=True, options={**SHORT, "num_predict": 12})
    assert cut.done and cut.prompt_eval_count == 512 - 12
    unbounded = ollama_client.generate(model="tiny", prompt="y" * 2000, raw=True, options={"temperature": 0})
    assert unbounded.prompt_eval_count == 512 - 512 // 4


def test_a_chat_that_cannot_be_cut_to_fit_says_how_to_enlarge_the_context(ollama_client, stack):
    with pytest.raises(ollama.ResponseError) as err:
        ollama_client.chat(model="tiny", messages=[*HI, {"role": "user", "content": "z" * 3000}], options=SHORT)
    assert err.value.status_code == 400
    assert "--context-size" in err.value.error and "/engines/_configure" in err.value.error
    long = _conversation(60)
    with httpx.Client(base_url=stack.url, timeout=120) as http:
        refused = http.post("/api/chat", json={"model": "tiny", "messages": long, "options": SHORT,
                                               "stream": False, "truncate": False})
        assert refused.status_code == 400 and "context" in refused.json()["error"]
        for path, body in [("/v1/chat/completions", {"model": "ai/tiny", "messages": long, "max_tokens": 2}),
                           ("/v1/messages", {"model": "ai/tiny", "messages": long[1:], "max_tokens": 2}),
                           ("/v1/responses", {"model": "ai/tiny", "input": long[1:], "max_output_tokens": 2})]:
            answered = http.post(path, json=body)
            assert answered.status_code == 400 and "context holds 512" in answered.text, (path, answered.text)


def test_num_ctx_runs_the_model_with_that_context_beside_the_configured_one(ollama_client, stack):
    """Ollama loads the model again with a client's num_ctx (Open WebUI and Continue send it); here an
    engine of that context runs beside the configured one (512), and each request gets its own."""
    messages = _conversation(60)
    small = ollama_client.chat(model="tiny", messages=messages, options={**SHORT, "num_predict": 40, "num_ctx": 256})
    assert small.done and small.prompt_eval_count <= 256 - 40
    configured = ollama_client.chat(model="tiny", messages=messages, options={**SHORT, "num_predict": 40})
    assert small.prompt_eval_count < configured.prompt_eval_count <= 512 - 40
    contexts = sorted(m.context_length for m in ollama_client.ps().models if "tiny" in m.model)
    assert contexts == [256, 512]
    for bad in (0, -1):
        with pytest.raises(ollama.ResponseError) as err:
            ollama_client.chat(model="tiny", messages=HI, options={**SHORT, "num_ctx": bad})
        assert err.value.status_code == 400 and "num_ctx" in err.value.error
    ollama_client.generate(model="tiny", prompt="", keep_alive=0)  # `ollama stop`: unloads both
    assert not [m for m in ollama_client.ps().models if "tiny" in m.model]
    ollama_client.chat(model="tiny", messages=HI, options={**SHORT, "num_ctx": 256})
    assert [m.context_length for m in ollama_client.ps().models if "tiny" in m.model] == [256]  # that one alone


MEGABYTES = "a" * 3_000_000  # the tiny vocabulary tokenizes this in quadratic time: minutes, uncancellable


def test_megabytes_past_the_context_are_refused_or_cut_without_tokenizing_them_whole(ollama_client, stack):
    """No token covers more bytes than the vocabulary's longest text, so 3 MB cannot fit 512 tokens:
    refused at once (at least N tokens), and a cut keeps only what can fit before tokenizing."""
    with httpx.Client(base_url=stack.url, timeout=120) as http:
        refused = http.post("/v1/chat/completions", json={"model": "ai/tiny", "max_tokens": 2,
                                                          "messages": [{"role": "user", "content": MEGABYTES}]})
        error = refused.json()["error"]
        assert refused.status_code == 400 and error["code"] == "context_length_exceeded", refused.text
        assert error["param"] == "messages" and "has at least " in error["message"]
        counted = http.post("/v1/messages/count_tokens", json={"model": "ai/tiny", "messages": _conversation(60)[1:]})
        assert counted.status_code == 200 and counted.json()["input_tokens"] > 512  # counting is not refusing
    half = MEGABYTES[: len(MEGABYTES) // 2]  # the messages together may hold 4 MiB
    history = [{"role": "user", "content": half}, {"role": "assistant", "content": half}]
    reply = ollama_client.chat(model="tiny", messages=[*history, *HI], options={**SHORT, "num_predict": 40})
    assert reply.done and reply.prompt_eval_count == _count(stack, HI)
    cut = ollama_client.generate(model="tiny", prompt=MEGABYTES, raw=True, options={**SHORT, "num_predict": 12})
    assert cut.done and cut.prompt_eval_count == 512 - 12


def test_top_logprobs_carry_their_bytes(stack):
    """As Ollama's TopLogprob does: each alternative's own bytes, also for part of a UTF-8 character."""
    body = {"model": "ai/tiny", "messages": [{"role": "user", "content": "hi"}], "stream": False,
            "logprobs": True, "top_logprobs": 10, "options": {"num_predict": 16, "temperature": 0}}
    reply = httpx.post(f"{stack.url}/api/chat", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    alternatives = [top for item in reply.json()["logprobs"] for top in item["top_logprobs"]]
    assert alternatives and all(top["bytes"] for top in alternatives)
    partial = [top for top in alternatives if top["token"] == "\ufffd"]
    assert partial and all(bytes(top["bytes"]) != "\ufffd".encode() for top in partial), partial
