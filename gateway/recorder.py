"""The request recorder: the last requests of each model on the inference routes, whatever API answered.

A pure ASGI middleware, so it knows bytes, not routes: any POST whose path ends like an inference
route of any family (OpenAI, Ollama, Anthropic, Responses, rerank) is recorded with its body, the
model named in that body, the status, time to first byte and duration, the answer, and the token counts
the answer reports (OpenAI's `usage`, Anthropic's and Responses' `input_tokens`/`output_tokens`,
Ollama's `prompt_eval_count`/`eval_count`), found in the answer's text, streamed or not.

Bounded everywhere: `per_model` records per model, MAX_MODELS models (the least recently used one goes),
`body_bytes` of each body kept (the rest counted, not stored). No header is recorded but User-Agent, so
Authorization and x-api-key never are, and the gateway's own key is scrubbed from anything kept.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelrunner.common.names import InvalidReference, parse_reference

INFERENCE_SUFFIXES = (
    "/chat/completions", "/completions", "/embeddings", "/responses", "/messages",
    "/rerank", "/reranking", "/score",
    "/api/chat", "/api/generate", "/api/embed", "/api/embeddings",
)
MAX_MODELS = 64
TAIL_BYTES = 4096  # of an answer past the kept head: where streams put their usage
SUBSCRIBER_QUEUE = 256
REDACTED = "[redacted]"
_PROMPT_KEYS = ("prompt_tokens", "input_tokens", "prompt_eval_count")
_COMPLETION_KEYS = ("completion_tokens", "output_tokens", "eval_count")
# A JSON key and its integer value; the same words inside a string value have escaped quotes (\"), so
# generated text that spells a key does not count.
_COUNT = re.compile(r'"(' + "|".join(_PROMPT_KEYS + _COMPLETION_KEYS) + r')"\s*:\s*(\d{1,10})')


def is_recorded(scope: Scope) -> bool:
    return scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith(INFERENCE_SUFFIXES)


def model_key(name: str) -> str:
    """Names group as the gateway resolves them: "tiny", "ai/tiny" and "ai/tiny:latest" are one model."""
    try:
        return parse_reference(name).familiar
    except InvalidReference:
        return name


def token_counts(text: str) -> tuple[int | None, int | None]:
    """The largest prompt and completion counts the answer reports (streams repeat or split them)."""
    found: dict[str, int] = {}
    for key, value in _COUNT.findall(text):
        kind = "prompt" if key in _PROMPT_KEYS else "completion"
        found[kind] = max(found.get(kind, 0), int(value))
    return found.get("prompt"), found.get("completion")


@dataclass
class Body:
    """The first `cap` bytes of a body, and how long it was."""

    cap: int
    head: bytearray = field(default_factory=bytearray)
    size: int = 0

    def add(self, chunk: bytes) -> None:
        if len(self.head) < self.cap:
            self.head += chunk[: self.cap - len(self.head)]
        self.size += len(chunk)

    def to_json(self, secrets: Iterable[str]) -> dict:
        return {"body": scrub(self.head.decode("utf-8", "replace"), secrets), "bytes": self.size,
                "truncated": self.size > len(self.head)}


def scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


@dataclass
class Record:
    id: int
    model: str
    method: str
    path: str
    user_agent: str
    started_at: float  # unix seconds
    started: float  # monotonic seconds
    request: Body
    response: Body
    state: str = "in_progress"  # then "completed", "cancelled" (the client went away) or "failed"
    status: int = 0
    content_type: str = ""
    ttfb_s: float | None = None
    duration_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tail: bytes = b""  # the answer's last TAIL_BYTES, for its token counts

    def add_response(self, chunk: bytes) -> None:
        if chunk and self.ttfb_s is None:
            self.ttfb_s = time.monotonic() - self.started
        self.response.add(chunk)
        if self.response.size > self.response.cap:
            self.tail = (self.tail + chunk)[-TAIL_BYTES:]

    def finish(self, state: str) -> None:
        self.state = state
        self.duration_s = time.monotonic() - self.started
        text = bytes(self.response.head).decode("utf-8", "replace") + self.tail.decode("utf-8", "replace")
        self.prompt_tokens, self.completion_tokens = token_counts(text)

    def to_json(self, secrets: Iterable[str] = ()) -> dict:
        return {
            "id": self.id, "model": self.model, "method": self.method, "path": self.path,
            "state": self.state, "status": self.status, "user_agent": self.user_agent,
            "started_at": self.started_at, "ttfb_ms": _ms(self.ttfb_s), "duration_ms": _ms(self.duration_s),
            "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens},
            "request": self.request.to_json(secrets),
            "response": {**self.response.to_json(secrets), "content_type": self.content_type},
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class Recorder:
    """The records, per model and bounded, and the live subscribers that get each finished one."""

    def __init__(self, per_model: int = 10, body_bytes: int = 32768, secrets: Iterable[str] = ()) -> None:
        self.per_model = max(per_model, 0)
        self.body_bytes = max(body_bytes, 0)
        self.secrets = tuple(s for s in secrets if s)
        self._models: OrderedDict[str, deque[Record]] = OrderedDict()
        self._ids = itertools.count(1)
        self._subscribers: set[asyncio.Queue[Record]] = set()

    def start(self, scope: Scope, body: bytes) -> Record:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        record = Record(
            id=next(self._ids), model=model_key(_model_of(body)), method=scope["method"], path=scope["path"],
            user_agent=headers.get("user-agent", ""), started_at=time.time(), started=time.monotonic(),
            request=Body(self.body_bytes), response=Body(self.body_bytes),
        )
        for secret in self.secrets:
            body = body.replace(secret.encode(), REDACTED.encode())
        record.request.add(body)
        records = self._models.pop(record.model, None) or deque(maxlen=self.per_model)
        records.append(record)
        self._models[record.model] = records  # most recently used last
        while len(self._models) > MAX_MODELS:
            self._models.popitem(last=False)
        return record

    def finish(self, record: Record, state: str) -> None:
        record.finish(state)
        for queue in self._subscribers:
            if queue.qsize() < SUBSCRIBER_QUEUE:  # a reader that does not keep up misses records
                queue.put_nowait(record)

    def records(self, model: str | None = None) -> list[Record]:
        """Oldest first; `model` in any spelling that resolves to the same name."""
        if model is not None:
            return list(self._models.get(model_key(model), ()))
        return sorted((r for records in self._models.values() for r in records), key=lambda r: r.id)

    def to_json(self, record: Record) -> dict:
        return record.to_json(self.secrets)

    async def follow(
        self, model: str | None = None, *, existing: bool = False, idle_s: float | None = None
    ) -> AsyncIterator[Record | None]:
        """Each record as it finishes, until the caller stops iterating. None first, once subscribed
        (whatever finishes from then on will come), and after each `idle_s` without a record, so the
        caller can tell its client the feed is live; then, with `existing`, the finished ones kept
        (taken after subscribing, so none falls between)."""
        queue: asyncio.Queue[Record] = asyncio.Queue()
        self._subscribers.add(queue)
        wanted = model_key(model) if model is not None else None
        try:
            yield None
            if existing:
                for record in self.records(model):
                    if record.state != "in_progress":  # those come when they finish
                        yield record
            while True:
                try:
                    record = await asyncio.wait_for(queue.get(), idle_s)
                except TimeoutError:
                    yield None
                    continue
                if wanted is None or record.model == wanted:
                    yield record
        finally:
            self._subscribers.discard(queue)


def _model_of(body: bytes) -> str:
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):  # the route answers a malformed or absurdly nested body itself
        return ""
    model = parsed.get("model") if isinstance(parsed, dict) else None
    return model if isinstance(model, str) else ""


class RecorderMiddleware:
    """Records each inference request passing through; the app never knows."""

    def __init__(self, app: ASGIApp, recorder: Recorder) -> None:
        self.app = app
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_recorded(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:  # the body limit before us has already read it all into memory
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        record = self.recorder.start(scope, body)
        replayed = False
        ended = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def watch(message: Message) -> None:
            nonlocal ended
            if message["type"] == "http.response.start":
                record.status = message["status"]
                for key, value in message.get("headers", ()):
                    if key.lower() == b"content-type":
                        record.content_type = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                record.add_response(message.get("body", b""))
                ended = not message.get("more_body", False)
            await send(message)

        state = "failed"
        try:
            await self.app(scope, replay, watch)
            state = "completed" if ended else "cancelled"
        except asyncio.CancelledError:
            state = "cancelled"
            raise
        finally:
            if not record.status:  # no answer started: what the client gets instead
                record.status = 499 if state == "cancelled" else 500
            self.recorder.finish(record, state)
