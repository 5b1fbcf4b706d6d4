"""Edge cases of the request recorder, on tiny ASGI apps: token counts in each API's answer, bounds,
secrets, failures and cancellations, and the live feed."""

from __future__ import annotations

import asyncio
import json

import pytest

from modelrunner.gateway.recorder import Recorder, RecorderMiddleware, is_recorded, token_counts


def answer(status: int = 200, chunks: tuple[bytes, ...] = (b"{}",), content_type: bytes = b"application/json"):
    async def app(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})
        for i, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1})

    return app


async def call(app, body: dict | bytes, path: str = "/v1/chat/completions", headers=()) -> list[dict]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    scope = {"type": "http", "method": "POST", "path": path, "headers": [*headers]}
    parts = [{"type": "http.request", "body": raw[:5], "more_body": True},
             {"type": "http.request", "body": raw[5:], "more_body": False}]
    sent: list[dict] = []

    async def receive():
        return parts.pop(0) if parts else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent


def openai_sse(prompt: int, completion: int) -> tuple[bytes, ...]:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return (b'data: {"choices":[{"delta":{"content":"\\"prompt_tokens\\": 999"}}]}\n\n',
            b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n", b"data: [DONE]\n\n")


@pytest.mark.parametrize(
    ("text", "counts"),
    [
        ('{"usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}', (7, 3)),
        (b"".join(openai_sse(5, 2)).decode(), (5, 2)),  # a key inside generated text does not count
        ('event: message_start\ndata: {"message": {"usage": {"input_tokens": 9, "output_tokens": 1}}}\n\n'
         'event: message_delta\ndata: {"usage": {"output_tokens": 12}}\n\n', (9, 12)),  # Anthropic
        ('{"response":"a","done":false}\n{"done":true,"prompt_eval_count":4,"eval_count":6}\n', (4, 6)),  # Ollama
        ('data: {"type":"response.completed","response":{"usage":{"input_tokens":3,"output_tokens":8}}}', (3, 8)),
        ('{"data": [{"embedding": [0.1]}], "usage": {"prompt_tokens": 2, "total_tokens": 2}}', (2, None)),
        ('{"error": {"message": "no"}}', (None, None)),
    ],
)
def test_token_counts_of_each_api(text, counts):
    assert token_counts(text) == counts


def test_only_inference_posts_are_recorded():
    def scope(method, path):
        return {"type": "http", "method": method, "path": path}

    for path in ("/v1/chat/completions", "/engines/llama.cpp/v1/completions", "/api/chat", "/v1/messages",
                 "/v1/responses", "/rerank", "/score", "/api/embed"):
        assert is_recorded(scope("POST", path)), path
    for method, path in (("GET", "/v1/responses"), ("POST", "/models/create"), ("POST", "/engines/_configure"),
                         ("POST", "/v1/messages/count_tokens"), ("POST", "/api/pull")):
        assert not is_recorded(scope(method, path)), path


async def test_a_streamed_answer_is_recorded_with_its_usage_and_timings():
    recorder = Recorder()
    app = RecorderMiddleware(answer(chunks=openai_sse(5, 2), content_type=b"text/event-stream"), recorder)
    sent = await call(app, {"model": "tiny", "stream": True}, headers=[(b"user-agent", b"t/1")])
    assert sent[-1] == {"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False}
    (record,) = [recorder.to_json(r) for r in recorder.records("ai/tiny:latest")]
    assert (record["model"], record["status"], record["state"], record["user_agent"]) == (
        "ai/tiny:latest", 200, "completed", "t/1")
    assert record["usage"] == {"prompt_tokens": 5, "completion_tokens": 2}
    assert 0 <= record["ttfb_ms"] <= record["duration_ms"]
    assert json.loads(record["request"]["body"]) == {"model": "tiny", "stream": True}
    assert record["response"]["content_type"] == "text/event-stream"


async def test_bodies_are_capped_and_usage_is_still_found_past_the_cap():
    recorder = Recorder(body_bytes=64)
    big = b'{"data": [' + b"0.5," * 5000 + b'0.5], "usage": {"prompt_tokens": 11, "total_tokens": 11}}'
    await call(RecorderMiddleware(answer(chunks=(big[:9000], big[9000:])), recorder), {"model": "m", "input": "x" * 500})
    (record,) = recorder.records()
    shown = recorder.to_json(record)
    assert shown["request"]["truncated"] and shown["request"]["bytes"] > 500
    assert len(shown["request"]["body"]) == 64 and shown["response"]["bytes"] == len(big)
    assert record.prompt_tokens == 11


async def test_each_model_keeps_its_last_requests():
    recorder = Recorder(per_model=2)
    app = RecorderMiddleware(answer(), recorder)
    for i in range(5):
        await call(app, {"model": "a", "n": i})
    await call(app, {"model": "docker.io/ai/b:latest"})
    assert [json.loads(r.request.head)["n"] for r in recorder.records("a")] == [3, 4]
    assert [r.model for r in recorder.records()] == ["ai/a:latest", "ai/a:latest", "ai/b:latest"]
    assert recorder.records("ai/b") == recorder.records("b")


async def test_secrets_are_never_recorded():
    recorder = Recorder(secrets=["sk-secret"])
    app = RecorderMiddleware(answer(chunks=(b'{"echo": "sk-secret"}',)), recorder)
    await call(app, {"model": "m", "prompt": "key sk-secret"},
               headers=[(b"authorization", b"Bearer sk-secret"), (b"x-api-key", b"sk-secret")])
    shown = json.dumps([recorder.to_json(r) for r in recorder.records()])
    assert "sk-secret" not in shown and "[redacted]" in shown and "x-api-key" not in shown


async def test_a_failing_app_and_a_client_gone_away_are_recorded_as_such():
    recorder = Recorder()

    async def broken(scope, receive, send):
        await receive()
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await call(RecorderMiddleware(broken, recorder), {"model": "m"})

    async def hangs(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: x\n\n", "more_body": True})
        await asyncio.Event().wait()

    task = asyncio.ensure_future(call(RecorderMiddleware(hangs, recorder), {"model": "m"}))
    await asyncio.sleep(0)
    while not recorder.records() or len(recorder.records()) < 2 or recorder.records()[-1].response.size == 0:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    failed, cancelled = recorder.records()
    assert (failed.status, failed.state) == (500, "failed")
    assert (cancelled.status, cancelled.state) == (200, "cancelled")


async def test_the_feed_gives_the_kept_records_then_each_new_one_for_its_model():
    recorder = Recorder()
    app = RecorderMiddleware(answer(), recorder)
    await call(app, {"model": "a"})
    feed = recorder.follow("a", existing=True, idle_s=0.01)
    assert await anext(feed) is None  # subscribed
    assert (await anext(feed)).model == "ai/a:latest"  # kept
    assert await anext(feed) is None  # idle: nothing new yet
    await call(app, {"model": "b"})
    await call(app, {"model": "a", "new": True})
    fresh = await anext(feed)
    while fresh is None:
        fresh = await anext(feed)
    assert json.loads(fresh.request.head) == {"model": "a", "new": True}
    await feed.aclose()
    assert not recorder._subscribers


def test_a_deeply_nested_body_names_no_model_instead_of_failing():
    from modelrunner.gateway.recorder import _model_of

    assert _model_of(b'{"model": ' + b"[" * 100_000 + b"]" * 100_000 + b"}") == ""
