"""Hostile bodies for every POST route of the gateway: a well-formed request per route (TEMPLATES, or
GENERIC), with up to three of its fields, at any depth, replaced by values that have crashed servers
before (NaN literals, integers past int32 and int64, lone surrogates, deep nesting, wrong types) or
dropped, or the whole body replaced by arbitrary JSON or bytes no parser should take. `answer_problem`
holds every answer to the rules: never a 5xx, always its API's error body, no server error in a stream."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import httpx
from hypothesis import strategies as st

TINY = "ai/tiny:v1"
REMOTE = "{registry}/fuzz/model:v1"  # on the test's own registry (`template` fills it in): no network
_SCHEMA = {"type": "object", "properties": {"a": {"type": "string", "maxLength": 5}}, "required": ["a"]}
_CHAT = {
    "model": TINY,
    "messages": [{"role": "system", "content": "be brief"},
                 {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    "max_tokens": 4, "max_completion_tokens": 4, "temperature": 0, "top_p": 0.9, "top_k": 40, "min_p": 0.05,
    "seed": 1, "stop": ["\n"], "presence_penalty": 0.1, "frequency_penalty": 0.1, "repeat_penalty": 1.1,
    "logit_bias": {"1": 1.5}, "n": 1, "stream": False, "logprobs": True, "top_logprobs": 2, "keep_alive": "5m",
    "tools": [{"type": "function", "function": {"name": "f", "parameters": _SCHEMA}}], "tool_choice": "auto",
    "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": _SCHEMA}},
}
_COMPLETION = {key: _CHAT[key] for key in ("model", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed",
                                           "stop", "logit_bias", "stream", "keep_alive")}
_COMPLETION.update(prompt="Once upon", logprobs=2, echo=False)
_EMBED = {"model": TINY, "input": ["a", "b"], "encoding_format": "float"}

# Any other POST route gets this: the fields most routes take (each ignores the others).
GENERIC = {"model": TINY, "messages": [{"role": "user", "content": "hi"}], "prompt": "hi", "input": "hi",
           "query": "q", "documents": ["a", "b"], "max_tokens": 4, "stream": False,
           "options": {"num_predict": 4, "temperature": 0}, "source": TINY, "destination": "ai/fuzz-copy:v1"}
# OpenAPI path -> (concrete path, query params, body); a route with path parameters needs one.
TEMPLATES: dict[str, tuple[str, dict[str, str], Any]] = {
    **{f"{prefix}/chat/completions": (f"{prefix}/chat/completions", {}, _CHAT)
       for prefix in ("/v1", "/engines/v1", "/engines/llama.cpp/v1")},
    **{f"{prefix}/completions": (f"{prefix}/completions", {}, _COMPLETION)
       for prefix in ("/v1", "/engines/v1", "/engines/llama.cpp/v1")},
    **{f"{prefix}/embeddings": (f"{prefix}/embeddings", {}, _EMBED)
       for prefix in ("/v1", "/engines/v1", "/engines/llama.cpp/v1")},
    "/models/create": ("/models/create", {}, {"from": REMOTE}),
    "/api/pull": ("/api/pull", {}, {"model": REMOTE, "stream": False}),
    "/api/push": ("/api/push", {}, {"model": REMOTE, "stream": False}),
    "/models/{name}/push": (f"/models/{REMOTE}/push", {}, None),
    "/models/{source}/tag": (f"/models/{TINY}/tag", {"repo": "ai/fuzz-copy", "tag": "v1"}, None),
    "/models/package": ("/models/package", {}, {"gguf_path": "/nonexistent/fuzz.gguf", "name": "ai/fuzz:v1"}),
    "/models/prune": ("/models/prune", {}, None),
    "/engines/unload": ("/engines/unload", {}, {"models": ["ai/fuzz-absent:v1"]}),
    "/engines/_configure": ("/engines/_configure", {}, {"model": "ai/fuzz-absent:v1", "context-size": 256,
                                                        "keep_alive": "1m", "parallel": 2}),
}

_nested = st.recursive(
    st.none() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12,
)
HOSTILE = st.one_of(
    st.sampled_from([
        math.nan, math.inf, -math.inf, 1e308, -0.0, 0.5, 2**31, 2**31 - 1, 2**63, 2**64, 99999999999, -1, -2**63 - 1,
        0, "", " ", None, True, False, [], {}, "\ud800", "x" * 20000, "\x00", "-1", "nan", "1e999", [[[]]],
        {"type": "object", "minItems": 99999999999}, {"type": "string", "maxLength": 5000},
    ]),
    st.builds(lambda depth: json.loads("[" * depth + "]" * depth), st.integers(50, 200)),
    st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20), _nested,
)
RAW_BODIES = [b"[" * 5000 + b"]" * 5000, b'{"model": ' * 3000, b"\xff\xfe{}", b'{"model": "ai/tiny:v1",', b"NaN",
              b'{"a": 1e999999}', b'{"model": 1' + b"0" * 5000 + b"}"]


def template(route: str, registry: str) -> tuple[str, dict[str, str], Any]:
    """The well-formed request of `route`, its remote references on `registry` (host:port)."""
    if route not in TEMPLATES:
        assert "{" not in route, f"give tests/support/fuzz.py a template for {route} (it has path parameters)"
        return route, {}, GENERIC
    path, query, body = TEMPLATES[route]
    return path.replace("{registry}", registry), query, json.loads(json.dumps(body).replace("{registry}", registry))


def paths_of(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON value a mutation can hit: each key of each object, each item of each list,
    down to the templates' depth (not into the deep values a mutation put there)."""
    out = []
    if len(prefix) >= 8:
        return out
    if isinstance(value, dict):
        for key, child in value.items():
            out += [(*prefix, key), *paths_of(child, (*prefix, key))]
    elif isinstance(value, list):
        for i, child in enumerate(value):
            out += [(*prefix, i), *paths_of(child, (*prefix, i))]
    return out


def mutate(body: Any, path: tuple, value: Any, drop: bool) -> None:
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    if drop and isinstance(parent, dict):
        parent.pop(path[-1], None)
    else:
        parent[path[-1]] = value


@st.composite
def hostile_request(draw, routes: list[str], registry: str) -> tuple[str, dict[str, str], bytes]:
    """(path, query, raw JSON body) for one of `routes` (OpenAPI paths)."""
    path, query, body = template(draw(st.sampled_from(routes)), registry)
    query = dict(query)
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return path, query, draw(st.sampled_from(RAW_BODIES))  # not even JSON, or JSON no parser should take
    if kind == 1:
        body = draw(_nested | HOSTILE)  # not an object
    else:
        body = copy.deepcopy(body)
        if isinstance(body, dict) and draw(st.booleans()):
            body["stream"] = True
        targets = paths_of(body) if body is not None else []
        for _ in range(draw(st.integers(0, 3))):  # 0: the well-formed request itself
            if query and draw(st.booleans()):
                hostile = str(draw(HOSTILE)).encode("utf-8", "replace").decode()  # a URL carries UTF-8 only
                query[draw(st.sampled_from(sorted(query)))] = hostile
            elif targets:
                value = copy.deepcopy(draw(HOSTILE))  # the sampled constants must stay as they are
                mutate(body, draw(st.sampled_from(targets)), value, drop=draw(st.integers(0, 4)) == 0)
                targets = paths_of(body)
    raw = b"" if body is None else json.dumps(body, allow_nan=True).encode()
    return path, query, raw


def answer_problem(reply: httpx.Response) -> str | None:
    """What breaks the rules every answer keeps, whatever was asked (None: nothing): never a 5xx, an
    error always in its API's error body, no server error inside a stream either."""
    if reply.status_code >= 500:
        return f"{reply.status_code} {reply.text[:500]}"
    if reply.status_code >= 400:
        try:  # OpenAI's and Anthropic's {"error": {"message"}}, Ollama's {"error": "..."}
            error = reply.json()["error"]
            message = error if isinstance(error, str) else error["message"]
        except (ValueError, KeyError, TypeError):
            return f"{reply.status_code} without an error body: {reply.text[:500]}"
        if not message or "Traceback" in message:
            return f"{reply.status_code} {reply.text[:500]}"
    if reply.headers.get("content-type", "").startswith("text/event-stream"):
        for line in reply.text.splitlines():
            event = json.loads(line[6:]) if line.startswith("data: {") else None
            error = event.get("error") if isinstance(event, dict) else None
            if isinstance(error, dict) and error.get("type") in ("server_error", "service_unavailable", "api_error"):
                return f"stream error event {line[:500]}"
    return None


def describe(path: str, query: dict[str, str], raw: bytes) -> str:
    return f"POST {path} {query or ''} {raw[:1500]!r}{'...' if len(raw) > 1500 else ''}"
