"""Grammar bounds on the real stack (gateway, Store, Distribution, Runner) with the tiny GGUF: schemas
that once became 77 MB of GBNF and gigabytes in the engine are refused at once or compiled in linear
size, a union of models told apart by a tag is served while one that leaves too many alternatives open
at once is refused (a union of unions included), schemas that once took minutes or failed with a 500
are answered at once, and while such requests are in flight another client's json_object request is
still served (its wait for the grammar pool is no longer counted as its own conversion time)."""

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


def copied(unions: int) -> dict:
    """Two models with 50 KB keys, each of `unions` different unions of them spelling both out in its
    prefix tree: a 200 KB schema (the Runner takes 256 KiB) whose grammar passes 1 MiB."""
    defs = {m: {"type": "object", "properties": {m * 50_000: {"type": "boolean"}}, "required": [m * 50_000]}
            for m in ("a", "b")}
    options = [{"$ref": "#/$defs/a"}, {"$ref": "#/$defs/b"}]
    properties = {f"u{i}": {"anyOf": [*options, {"const": i}]} for i in range(unions)}
    return {"type": "object", "properties": properties, "required": list(properties), "$defs": defs}


def tagged(n: int) -> dict:
    """n models in a oneOf as pydantic writes a discriminated union: a shared field, then the tag."""
    defs = {f"M{i}": {"type": "object", "properties": {"name": {"type": "string"}, "kind": {"const": f"t{i}"}},
                      "required": ["name", "kind"]} for i in range(n)}
    return {"oneOf": [{"$ref": f"#/$defs/M{i}"} for i in range(n)], "$defs": defs,
            "discriminator": {"propertyName": "kind"}}


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
    message = refusal(chat(stack.url, schema_format(copied(12))))
    assert "response_format" in message and "too large" in message


def test_a_union_of_256_tagged_models_is_served(stack):
    """One rule per model had left 256 paths open until the tag: 1.5 s a masked step with Gemma."""
    reply = chat(stack.url, schema_format(tagged(256)))
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"].startswith("{")


def test_a_union_leaving_too_many_alternatives_open_is_refused(stack):
    """Objects alike but for the range of their one field: past its key there is nothing left to share."""
    untagged = {"anyOf": [{"type": "object", "properties": {"n": {"type": "integer", "minimum": i}}, "required": ["n"]}
                          for i in range(200)]}
    message = refusal(chat(stack.url, schema_format(untagged)))
    assert "response_format" in message and "anyOf: leaves 200 alternatives open at once; at most 128" in message


def nested_type_lists(depth: int, copies: int) -> dict:
    schema: dict = {"type": "boolean"}
    for _ in range(depth):
        schema = {"type": ["object"] * copies, "properties": {"p": schema}, "required": ["p"]}
    return schema


def alike(first: int) -> dict:
    return {"anyOf": [{"type": "object", "properties": {"n": {"type": "integer", "minimum": first + i}}, "required": ["n"]}
                      for i in range(100)]}


def recursive_models(n: int) -> dict:
    union = {"anyOf": [{"$ref": f"#/$defs/N{k}"} for k in range(n)]}
    defs = {f"N{k}": {"type": "object", "properties": {"kind": {"const": f"n{k}"}, "kids": {"type": "array", "items": union}},
                      "required": ["kind"]} for k in range(n)}
    return {**union, "$defs": defs}


@pytest.mark.parametrize(
    "schema, status, words",
    [
        (nested_type_lists(5, 25), 200, ""),
        ({"type": ["string", ["x"]], "minLength": 1}, 400, "type: must be a type name"),
        ({"anyOf": [alike(100 * k) for k in range(20)]}, 400, "anyOf: leaves 2000 alternatives open at once"),
        (recursive_models(16), 200, ""),
        ({"enum": [chr(0x4E00 + i) + "xyz" for i in range(1024)]}, 400, "enum: leaves 1024 values open at once"),
        ({"enum": [f"v{i}" for i in range(1024)]}, 200, ""),
    ],
    ids=["type-copies-nested", "type-list-of-a-list", "union-of-unions", "16-recursive-models",
         "enum-1024-first-characters", "enum-1024-alike"],
)
def test_schemas_the_review_found_are_answered(stack, schema, status, words):
    """Once: 230 s of the grammar pool for a 1.3 KB schema (a 400 at the end), a 500 (TypeError), 2000
    paths open at once served (a union of unions each under the bound), 16 recursive models refused,
    and an enum of 1024 values that begin with 1024 different characters served (1.2-1.5 s a masked
    step with Gemma, every stream of the model waiting: an attacker's logit_bias forces the mask)."""
    reply = chat(stack.url, schema_format(schema))
    assert reply.status_code == status, reply.text
    assert words in (reply.json()["error"]["message"] if status == 400 else "")


def test_json_object_is_served_while_big_schemas_are_in_flight(stack):
    """The review's repro: two clients send the biggest schemas (the 77 MB one of old included) while a
    third sends plain json_object requests: every one of those is served, none blamed for the others."""
    big = [booleans(2400, required=False), booleans(2400, required=True), copied(12)]

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
