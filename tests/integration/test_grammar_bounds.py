"""Grammar bounds on the real stack (gateway, Store, Distribution, Runner) with the tiny GGUF: schemas
that once became 77 MB of GBNF and gigabytes in the engine are refused at once or compiled in linear
size, and while such requests are in flight another client's json_object request is still served
(its wait for the grammar pool is no longer counted as its own conversion time)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.stack import serving


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_gguf):
    with serving(tmp_path_factory.mktemp("grammar-bounds"), {"ai/tiny": tiny_gguf}) as running:
        yield running


def booleans(n: int, required: bool) -> dict:
    names = [f"p{i}" for i in range(n)]
    return {"type": "object", "properties": {k: {"type": "boolean"} for k in names}, "required": names if required else []}


def retyped(copies: int) -> dict:
    """One 100 KB key under `copies` copies of the same type, each converted anew: a 201 KB schema (the
    Runner takes 256 KiB) that made 50 MB of GBNF."""
    key = "k" * 100_000
    return {"type": ["object"] * copies, "properties": {key: {"type": "boolean"}}, "required": [key]}


def chat(url: str, response_format: dict) -> httpx.Response:
    body = {"model": "ai/tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
            "response_format": response_format}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)


def schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def refusal(reply: httpx.Response) -> str:
    assert reply.status_code == 400, reply.text
    return reply.json()["error"]["message"]


def test_2400_optional_properties_are_refused_naming_what_to_change(stack):
    """Every optional member is a path llama.cpp's sampler checks the vocabulary against at each step."""
    message = refusal(chat(stack.url, schema_format(booleans(2400, required=False))))
    assert "response_format" in message and "2400 properties optional" in message and "required" in message


def test_2400_required_properties_are_served(stack):
    reply = chat(stack.url, schema_format(booleans(2400, required=True)))
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"].startswith("{")


def test_a_schema_past_the_size_bound_is_refused(stack):
    message = refusal(chat(stack.url, schema_format(retyped(100))))
    assert "response_format" in message and "too large" in message


def test_json_object_is_served_while_big_schemas_are_in_flight(stack):
    """The review's repro: two clients send the biggest schemas (the 77 MB one of old included) while a
    third sends plain json_object requests: every one of those is served, none blamed for the others."""
    big = [booleans(2400, required=False), booleans(2400, required=True), retyped(100)]

    def flood(client: int) -> set[int]:
        # A fresh title per request: never cached, so converted and compiled every time.
        return {chat(stack.url, schema_format({**schema, "title": f"{client}-{n}"})).status_code
                for n, schema in enumerate(big * 2)}

    with ThreadPoolExecutor(2) as pool:
        floods = [pool.submit(flood, client) for client in range(2)]
        victims = [chat(stack.url, {"type": "json_object"})]
        while not all(f.done() for f in floods):
            victims.append(chat(stack.url, {"type": "json_object"}))
    for reply in victims:
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"].startswith("{")
    assert set().union(*(f.result() for f in floods)) == {200, 400}
