"""Rerank/score, Tokenize and the request recorder against the real stack (four processes), with the
tiny Qwen3 reranker and the tiny llama packaged by the Store: httpx for rerank, score and the recorder,
the `openai` client for the requests recorded, gRPC for Tokenize, and `modelrunner requests`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import grpc
import httpx
import openai
import pytest

from modelrunner.store.upload import package_files
from modelrunner.v1 import runner_pb2, runner_pb2_grpc, store_pb2_grpc
from tests.support.stack import ROOT, Stack
from tests.support.tiny_gguf import write_tiny_reranker

KEY = "sk-recorder-test-4f1b9c"
PER_MODEL = 5
BODY_BYTES = 4096
AUTH = {"Authorization": f"Bearer {KEY}"}
DOCUMENTS = ["a cat sat on the mat", "stock prices fell", "the cat purrs", "rain tomorrow"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_gguf):
    workdir = tmp_path_factory.mktemp("rerank-recorder")
    reranker = write_tiny_reranker(workdir / "rr.gguf")
    running = Stack(workdir, {
        "MODELRUNNER_API_KEY": KEY,
        "MODELRUNNER_RECORDED_REQUESTS": str(PER_MODEL),
        "MODELRUNNER_RECORDED_BODY_BYTES": str(BODY_BYTES),
        "MODELRUNNER_RUNNER_THREADS": "1",
    }).start()
    try:
        running.wait_healthy()
        with grpc.insecure_channel(f"127.0.0.1:{running.ports['store']}") as channel:
            for path, name in ((tiny_gguf, "ai/tiny"), (reranker, "ai/rr")):
                package_files(store_pb2_grpc.StoreStub(channel), [path], name)
        yield running
    finally:
        codes = running.stop()
    assert codes["gateway"] == 0, running.log("gateway").read_text()[-3000:]


@pytest.fixture(scope="module")
def http(stack):
    with httpx.Client(base_url=stack.url, headers=AUTH, timeout=60) as client:
        yield client


def recorded(http: httpx.Client, model: str) -> list[dict]:
    reply = http.get("/engines/requests", params={"model": model})
    assert reply.status_code == 200, reply.text
    return reply.json()["requests"]


def test_rerank_orders_the_documents_and_keeps_top_n(http):
    full = http.post("/rerank", json={"model": "ai/rr", "query": "cats", "documents": DOCUMENTS})
    assert full.status_code == 200, full.text
    body = full.json()
    assert body["model"] == "ai/rr:latest" and body["object"] == "list"
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    scores = [r["relevance_score"] for r in body["results"]]
    assert sorted(r["index"] for r in body["results"]) == [0, 1, 2, 3]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) > 1
    for path in ("/v1/rerank", "/engines/v1/rerank", "/engines/llama.cpp/v1/rerank", "/reranking"):
        top = http.post(path, json={"model": "ai/rr", "query": "cats", "documents": DOCUMENTS, "top_n": 2,
                                    "return_documents": True})
        assert top.status_code == 200, (path, top.text)
        results = top.json()["results"]
        assert [r["index"] for r in results] == [r["index"] for r in body["results"][:2]]
        assert [r["document"]["text"] for r in results] == [DOCUMENTS[r["index"]] for r in results]
    objects = http.post("/v1/rerank", json={"model": "ai/rr", "query": "cats",
                                            "documents": [{"text": d} for d in DOCUMENTS]})
    assert objects.json()["results"] == body["results"]


def test_score_answers_each_pair_in_order(http):
    ranked = http.post("/rerank", json={"model": "ai/rr", "query": "cats", "documents": DOCUMENTS}).json()
    by_index = {r["index"]: r["relevance_score"] for r in ranked["results"]}
    one_to_many = http.post("/score", json={"model": "ai/rr", "text_1": "cats", "text_2": DOCUMENTS})
    assert one_to_many.status_code == 200, one_to_many.text
    data = one_to_many.json()["data"]
    assert [d["index"] for d in data] == [0, 1, 2, 3] and {d["object"] for d in data} == {"score"}
    assert [d["score"] for d in data] == pytest.approx([by_index[i] for i in range(4)], abs=5e-3)
    pairwise = http.post("/v1/score", json={"model": "ai/rr", "text_1": ["cats", "stocks"],
                                            "text_2": [DOCUMENTS[0], DOCUMENTS[1]]})
    assert pairwise.status_code == 200, pairwise.text
    assert pairwise.json()["data"][0]["score"] == pytest.approx(by_index[0], abs=5e-3)


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/v1/rerank", {"model": "ai/tiny", "query": "q", "documents": ["d"]}, 400, "is not a reranker"),
        ("/v1/rerank", {"model": "ai/rr", "query": "q", "documents": []}, 400, "documents"),
        ("/v1/rerank", {"model": "ai/rr", "query": "q", "documents": ["d"], "top_n": 0}, 400, "top_n"),
        ("/v1/rerank", {"model": "ai/absent", "query": "q", "documents": ["d"]}, 404, "modelrunner pull"),
        ("/score", {"model": "ai/rr", "text_1": ["a", "b"], "text_2": ["c", "d", "e"]}, 400, "text_1 has 2"),
        ("/rerank", b'{"model": "ai/rr", "query": "q", "documents": ["\\ud800"]}', 400, "documents[0]: not UTF-8"),
    ],
)
def test_rerank_errors_say_what_to_fix(http, path, body, status, says):
    json_type = {"content-type": "application/json"}
    reply = http.post(path, content=body, headers=json_type) if isinstance(body, bytes) else http.post(path, json=body)
    assert reply.status_code == status, reply.text
    assert says in reply.json()["error"]["message"]


def test_tokenize_counts_what_generate_prefills(stack):
    chat = runner_pb2.Chat(messages=[runner_pb2.ChatMessage(role="system", content="be brief"),
                                     runner_pb2.ChatMessage(role="user", content="hello there")])
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports['runner']}") as channel:
        runner = runner_pb2_grpc.RunnerStub(channel)
        counted = runner.Tokenize(runner_pb2.TokenizeRequest(model="ai/tiny", chat=chat), timeout=60)
        chunks = list(runner.Generate(runner_pb2.GenerateRequest(
            model="ai/tiny", chat=chat, sampling=runner_pb2.SamplingParams(temperature=0, max_tokens=2)), timeout=60))
    assert counted.model == "docker.io/ai/tiny:latest"
    assert counted.count == chunks[-1].usage.prompt_tokens > 0


def test_the_recorder_keeps_each_surface_with_status_timings_and_tokens(stack, http):
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=KEY, max_retries=0)
    messages = [{"role": "user", "content": f"my key is {KEY}"}]
    client.chat.completions.create(model="ai/tiny", messages=messages, max_tokens=4, temperature=0)
    streamed = client.chat.completions.create(model="ai/tiny", messages=messages, max_tokens=4, temperature=0,
                                              stream=True, stream_options={"include_usage": True})
    assert list(streamed)
    client.completions.create(model="ai/tiny", prompt="once", max_tokens=3, temperature=0)
    assert list(client.completions.create(model="ai/tiny", prompt="once", max_tokens=3, temperature=0, stream=True,
                                          stream_options={"include_usage": True}))
    client.embeddings.create(model="ai/tiny", input=["a", "bb"])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="ai/never-pulled", messages=messages, max_tokens=1)

    records = recorded(http, "tiny")  # any spelling of the name
    assert [r["path"] for r in records] == ["/v1/chat/completions", "/v1/chat/completions", "/v1/completions",
                                            "/v1/completions", "/v1/embeddings"]
    assert {(r["status"], r["state"], r["model"]) for r in records} == {(200, "completed", "ai/tiny:latest")}
    chat, stream, completion, streamed_completion, embedding = records
    for r in (chat, stream, completion, streamed_completion):
        assert r["usage"]["prompt_tokens"] > 0 and 0 < r["usage"]["completion_tokens"] <= 4
        assert 0 <= r["ttfb_ms"] <= r["duration_ms"]
    assert embedding["usage"]["prompt_tokens"] > 0 and embedding["usage"]["completion_tokens"] is None
    for r in (stream, streamed_completion):
        assert r["response"]["content_type"].startswith("text/event-stream")
        assert r["response"]["body"].endswith("data: [DONE]\n\n")
    assert json.loads(chat["response"]["body"])["object"] == "chat.completion"
    assert json.loads(chat["request"]["body"])["messages"][0]["content"] == "my key is [redacted]"
    assert chat["user_agent"].startswith("OpenAI/Python")
    missing = recorded(http, "ai/never-pulled")
    assert [(r["status"], r["state"]) for r in missing] == [(404, "completed")]
    everything = http.get("/engines/requests").text
    assert KEY not in everything and "authorization" not in everything.lower()


def test_the_recorder_keeps_the_last_requests_of_a_model_and_caps_bodies(http):
    ids = []
    for i in range(PER_MODEL + 1):
        assert http.post("/v1/rerank", json={"model": "ai/rr", "query": "q", "documents": [f"doc {i}"]}).status_code == 200
        ids.append(recorded(http, "ai/rr")[-1]["id"])
    too_long = http.post("/v1/rerank", json={"model": "ai/rr", "query": "q", "documents": ["x" * 2 * BODY_BYTES]})
    assert too_long.status_code == 400 and "documents[0]" in too_long.json()["error"]["message"]
    records = recorded(http, "ai/rr")
    assert [r["id"] for r in records[:-1]] == ids[-(PER_MODEL - 1):]
    big = records[-1]
    assert (big["status"], big["state"]) == (400, "completed")
    assert big["request"]["truncated"] and big["request"]["bytes"] > 2 * BODY_BYTES
    assert len(big["request"]["body"].encode()) <= BODY_BYTES
    assert not records[-2]["request"]["truncated"]


def test_the_live_stream_yields_each_new_request(stack, http):
    with httpx.Client(base_url=stack.url, headers=AUTH, timeout=60) as follower:
        with follower.stream("GET", "/engines/requests/stream", params={"model": "ai/rr"}) as events:
            lines = events.iter_lines()
            assert next(lines) == ": keep-alive"  # subscribed: what finishes from now on comes
            http.post("/v1/chat/completions", json={"model": "ai/tiny", "max_tokens": 1,
                                                    "messages": [{"role": "user", "content": "hi"}]})
            http.post("/score", json={"model": "ai/rr", "text_1": "q", "text_2": ["d"]})
            data = next(line for line in lines if line.startswith("data:"))
    record = json.loads(data[5:])
    assert (record["path"], record["model"], record["status"]) == ("/score", "ai/rr:latest", 200)
    params = {"stream": "true", "model": "ai/rr", "include_existing": "true"}
    with http.stream("GET", "/engines/requests", params=params) as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        first = next(line for line in events.iter_lines() if line.startswith("data:"))
    assert json.loads(first[5:])["id"] == recorded(http, "ai/rr")[0]["id"]  # the kept ones first


def cli(stack, *args: str) -> subprocess.Popen:
    env = {**os.environ, "MODELRUNNER_HOST": stack.url, "MODELRUNNER_API_KEY": KEY, "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "modelrunner.cli.main", "requests", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_cli_prints_the_requests(stack, http):
    http.post("/v1/rerank", json={"model": "ai/rr", "query": "q", "documents": ["d"]})
    out, err = cli(stack, "--model", "ai/rr", "--json").communicate(timeout=60)
    as_json = json.loads(out)
    assert as_json and {r["model"] for r in as_json} == {"ai/rr:latest"}, err
    out, err = cli(stack, "--model", "ai/rr").communicate(timeout=60)
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["ID", "STARTED", "MODEL", "ROUTE"], err
    assert len(rows) == len(as_json) and all("ai/rr:latest" in row and "POST /v1/rerank" in row for row in rows[-1:])
    follower = cli(stack, "-f", "--include-existing", "--model", "ai/rr", "--json")
    try:
        first = json.loads(follower.stdout.readline())
        assert first["id"] == as_json[0]["id"]
    finally:
        follower.terminate()
        follower.wait(timeout=20)


def test_the_new_routes_are_in_openapi(http):
    paths = http.get("/openapi.json").json()["paths"]
    for path in ("/rerank", "/v1/rerank", "/score", "/engines/v1/score", "/engines/requests",
                 "/engines/requests/stream"):
        assert path in paths, path
