"""JSON Schema -> GBNF: counts become bounded repetition (maxLength 5000 included), unsupported
keywords are named, and for random schemas llama.cpp compiles the grammar and every answer it lets
through validates against the schema (property test with hypothesis, on the tiny GGUF's vocabulary).
An object's grammar accepts exactly its members in order with the required ones, in size linear in
them; a union accepts exactly what one rule per alternative did, its alternatives sharing a prefix
tree; any schema's grammar accepts exactly what a matcher reading the schema itself does
(tests/support/schema_oracle.py); a schema past a bound (bytes, spelt-out repetitions, optional
members, alternatives open at once, nested unions' included, CPU time, equal rules or not) is refused,
and waiting for the conversion pool never counts against a request's time. SCHEMA_PROPERTY_SCALE=20
runs the property tests with 20 times the examples."""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading

import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelrunner.runner.backends.base import LoadOptions
from modelrunner.runner import grammars
from modelrunner.runner.backends.llamacpp import LlamaCppBackend
from modelrunner.runner import json_schema_gbnf
from modelrunner.runner.json_schema_gbnf import (
    MAX_ALTERNATIVES, MAX_GBNF_BYTES, MAX_OPTIONAL, UnsupportedSchema, schema_to_gbnf,
)
from modelrunner.v1 import runner_pb2
from tests.support import schema_oracle

# Hypothesis examples per property test, times this (a review runs them with 20 or more).
SCALE = int(os.environ.get("SCHEMA_PROPERTY_SCALE", "1"))
EOS = 2  # the tiny GGUF's </s>; its other tokens are the bytes 3..255, token id = byte value
QUOTE = ord('"')
CLOSERS = [QUOTE, ord("}"), ord("]"), EOS]


@pytest.fixture(scope="module")
def model(tiny_gguf):
    loaded = LlamaCppBackend().load([str(tiny_gguf)], LoadOptions(context_size=64, parallel=1, threads=1))
    yield loaded
    loaded.close()


def generate(
    model, gbnf: str, rng: np.random.Generator, bias: dict[int, float], max_steps: int, ascii_may_end: bool = False
) -> str | None:
    """A random ASCII answer the grammar allows (None if it did not end within max_steps, or, with
    `ascii_may_end`, where only a non-ASCII character may follow)."""
    grammar = model.grammar(gbnf)
    out = bytearray()
    try:
        for _ in range(max_steps):
            logits = rng.standard_normal(256).astype(np.float32)
            logits[:3] = -np.inf
            logits[EOS] = 0.0
            for token, b in bias.items():
                logits[token] += b
            every = logits.copy()
            logits[0x80:] = -np.inf  # ASCII only: lengths in characters are lengths in bytes
            grammar.apply(logits)
            token = int(np.argmax(logits))
            if ascii_may_end and not np.isfinite(logits[token]):
                grammar.apply(every)
                assert np.isfinite(every).any(), f"the grammar allows nothing after {bytes(out)!r}"
                return None
            assert np.isfinite(logits[token]), f"the grammar allows nothing after {bytes(out)!r}"
            if token == EOS:
                return out.decode()
            grammar.accept(token)
            out.append(token)
        return None
    finally:
        grammar.close()


def accepts(model, gbnf: str, text: str) -> bool:
    """Whether the grammar allows exactly `text` (its UTF-8 bytes, one token each), then the end."""
    grammar = model.grammar(gbnf)
    try:
        for byte in text.encode():
            if not grammar.allows(byte):
                return False
            grammar.accept(byte)
        return grammar.allows(EOS)
    finally:
        grammar.close()


def booleans(n: int, required: bool = False, width: int = 0) -> dict:
    """An object of n boolean properties, names padded to `width` characters."""
    names = [f"p{i}".rjust(width, "0") for i in range(n)]
    return {"type": "object", "properties": {k: {"type": "boolean"} for k in names}, "required": names if required else []}


def test_max_length_5000_is_bounded_repetition_that_llama_cpp_compiles_and_enforces(model):
    schema = {"type": "string", "minLength": 2100, "maxLength": 5000}
    gbnf = schema_to_gbnf(json.dumps(schema))
    assert len(gbnf) < 2000 and "{" in gbnf  # no nested optionals
    rng = np.random.default_rng(0)
    shortest = generate(model, gbnf, rng, {QUOTE: 50.0, EOS: 50.0}, 6000)
    longest = generate(model, gbnf, rng, {QUOTE: -50.0, EOS: 50.0}, 6000)
    assert len(json.loads(shortest)) == 2100
    assert len(json.loads(longest)) == 5000


@pytest.mark.parametrize("low, high", [(0, 2001), (1999, 4001), (3000, 3000), (0, 999), (2, 2)])
def test_counts_past_llama_cpps_repetition_limit_give_exact_bounds(model, low, high):
    gbnf = schema_to_gbnf(json.dumps({"type": "array", "items": {"const": 1}, "minItems": low, "maxItems": high}))
    rng = np.random.default_rng(1)
    comma, close = ord(","), ord("]")
    shortest = generate(model, gbnf, rng, {close: 50.0, EOS: 50.0}, 5 * high + 10)
    longest = generate(model, gbnf, rng, {comma: 50.0, ord("1"): 40.0, EOS: 50.0}, 5 * high + 10)
    assert len(json.loads(shortest)) == low
    assert len(json.loads(longest)) == high


@pytest.mark.parametrize(
    "schema, keyword",
    [
        ({"type": "string", "pattern": "^a+$"}, "pattern"),
        ({"type": "array", "uniqueItems": True}, "uniqueItems"),
        ({"type": "object", "minProperties": 1}, "minProperties"),
        ({"type": "number", "maximum": 3}, "maximum"),
        ({"type": "integer", "minimum": 10**16}, "minimum"),
        ({"$ref": "https://example.com/schema.json"}, "$ref"),
        ({"type": "string", "maxLength": 10**9}, "maxLength"),
        ({"type": "object", "properties": {}, "required": ["x"]}, "required"),
        ({"type": "tuple"}, "type"),
    ],
)
def test_unsupported_keywords_are_named(schema, keyword):
    with pytest.raises(UnsupportedSchema) as err:
        schema_to_gbnf(json.dumps(schema))
    assert err.value.keyword == keyword and str(err.value).startswith(keyword)


def test_checking_one_token_agrees_with_the_mask(model):
    grammar = model.grammar(schema_to_gbnf('{"type": "object", "properties": {"a": {"type": "integer"}}}'))
    try:
        for step in [b"", b"{", b'"a": ', b"1"]:
            for byte in step:
                grammar.accept(byte)
            row = np.zeros(256, dtype=np.float32)
            grammar.apply(row)
            assert [grammar.allows(t) for t in range(256)] == list(np.isfinite(row))
    finally:
        grammar.close()


def test_recursive_local_refs_compile(model):
    schema = {
        "$defs": {"node": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}}, "required": ["kids"]}},
        "$ref": "#/$defs/node",
    }
    model.grammar(schema_to_gbnf(json.dumps(schema))).close()


KEYS = st.sampled_from(["a", "b", "c", "name", "x y"])
SCALARS = st.one_of(st.integers(-50, 50), st.text("abcxyz ", max_size=4), st.booleans(), st.none())


def leaf_schemas() -> st.SearchStrategy[dict]:
    counts = st.integers(0, 4)
    return st.one_of(
        st.builds(lambda lo, extra: {"type": "string", "minLength": lo, "maxLength": lo + extra}, counts, counts),
        st.just({"type": "string"}),
        st.just({"type": "number"}),
        st.just({"type": "boolean"}),
        st.just({"type": "null"}),
        st.builds(lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span}, st.integers(-20, 20), st.integers(0, 30)),
        st.builds(lambda lo: {"type": "integer", "minimum": lo}, st.integers(0, 999)),
        st.builds(lambda vs: {"enum": vs}, st.lists(SCALARS, min_size=1, max_size=4, unique_by=json.dumps)),
        st.builds(lambda v: {"const": v}, SCALARS),
        st.just({"type": ["string", "null"], "maxLength": 3}),
    )


def composite(children: st.SearchStrategy[dict]) -> st.SearchStrategy[dict]:
    def obj(props: dict, required: list, extra: bool) -> dict:
        return {"type": "object", "properties": props, "required": [k for k in required if k in props], "additionalProperties": extra}

    return st.one_of(
        st.builds(lambda item, lo, extra: {"type": "array", "items": item, "minItems": lo, "maxItems": lo + extra}, children, st.integers(0, 2), st.integers(0, 2)),
        st.builds(obj, st.dictionaries(KEYS, children, max_size=3), st.lists(KEYS, max_size=3, unique=True), st.just(False)),
        st.builds(lambda a, b: {"anyOf": [a, b]}, children, children),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=st.recursive(leaf_schemas(), composite, max_leaves=6), seed=st.integers(0, 2**32 - 1))
def test_every_answer_a_schema_grammar_allows_validates(model, schema, seed):
    gbnf = schema_to_gbnf(json.dumps(schema))
    closers = {t: 2.0 for t in CLOSERS}
    answer = generate(model, gbnf, np.random.default_rng(seed), closers, 400)
    if answer is not None:
        jsonschema.validate(json.loads(answer), schema)


MEMBER_KEYS = ["a", "b", "", "x y", 'q"', "p1", "p10"]  # "" was once named "root", the grammar's own rule
MEMBER_VALUES = {"boolean": True, "null": None, "integer": -3, "string": "s"}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_an_object_grammar_accepts_exactly_its_members_in_order_with_the_required_ones(model, data):
    keys = data.draw(st.lists(st.sampled_from(MEMBER_KEYS), unique=True, max_size=5), "keys")
    kinds = {k: data.draw(st.sampled_from(sorted(MEMBER_VALUES))) for k in keys}
    subsets = st.lists(st.sampled_from(keys), unique=True) if keys else st.just([])
    required = data.draw(subsets, "required")
    gbnf = schema_to_gbnf(json.dumps({"type": "object", "properties": {k: {"type": kinds[k]} for k in keys}, "required": required}))
    for _ in range(4):
        present = data.draw(subsets, "present")
        if data.draw(st.booleans(), "in declared order"):
            present.sort(key=keys.index)
        separators = data.draw(st.sampled_from([(", ", ": "), (",", ":")]))
        answer = json.dumps({k: MEMBER_VALUES[kinds[k]] for k in present}, separators=separators)
        legal = set(required) <= set(present) and present == sorted(present, key=keys.index)
        assert accepts(model, gbnf, answer) == legal, answer


def test_optional_members_grow_the_grammar_linearly():
    """Spelling out which subset is present was quadratic: 2400 booleans made 77 MB of GBNF."""
    small, large = (len(schema_to_gbnf(json.dumps(booleans(n)))) for n in (MAX_OPTIONAL // 2, MAX_OPTIONAL))
    assert large < 2.2 * small


def test_thousands_of_required_members_compile_and_are_enforced(model):
    schema = booleans(2400, required=True)
    gbnf = schema_to_gbnf(json.dumps(schema))
    assert len(gbnf) < 100 * 2400
    whole = {k: True for k in schema["properties"]}
    assert accepts(model, gbnf, json.dumps(whole))
    del whole["p1234"]
    assert not accepts(model, gbnf, json.dumps(whole))


@pytest.mark.parametrize(
    "schema, keyword, words",
    [
        (booleans(2400), "required", f"leaves 2400 properties optional; at most {MAX_OPTIONAL}"),
        (booleans(2000, required=True, width=600), "json_schema", f"too large: its grammar passes {MAX_GBNF_BYTES} bytes"),
        ({"enum": [f"{i}" + "x" * 5000 for i in range(250)]}, "json_schema", "too large"),
        ({"type": "object", "properties": {f"s{i}": {"type": "string", "maxLength": 2000} for i in range(1000)},
          "required": [f"s{i}" for i in range(1000)]}, "json_schema", "maxLength - minLength"),
        ({"anyOf": [{"type": "string", "maxLength": i} for i in range(200)]}, "anyOf",
         f"leaves 200 alternatives open at once; at most {MAX_ALTERNATIVES}"),
        ({"oneOf": [{"type": "object", "properties": {"n": {"type": "integer", "minimum": i}}, "required": ["n"]}
                    for i in range(200)]}, "oneOf", "leaves 200 alternatives open at once"),
        ({"enum": [chr(0x4E00 + i) + "xyz" for i in range(200)]}, "enum",
         f"leaves 200 values open at once (that many begin differently after their shared beginning); at most "
         f"{MAX_ALTERNATIVES}"),
    ],
    ids=["2400-optional", "long-names", "long-enum", "1000-length-ranges", "200-strings", "200-objects-alike",
         "200-first-characters"],
)
def test_schemas_past_a_bound_are_refused_naming_what_to_simplify(schema, keyword, words):
    with pytest.raises(UnsupportedSchema) as err:
        schema_to_gbnf(json.dumps(schema))
    assert err.value.keyword == keyword and words in str(err.value)


def test_equal_rules_are_made_once():
    """100 copies of one type, each converted anew, made 10 MB of GBNF from a 100 KB key."""
    key = "k" * 10**5
    gbnf = schema_to_gbnf(json.dumps({"type": ["object"] * 100, "properties": {key: {}}, "required": [key]}))
    assert len(gbnf) < 1.1 * len(key)


def test_the_time_limit_is_the_conversions_own_cpu_time():
    with pytest.raises(UnsupportedSchema, match="took more than 1e-06 s to convert"):
        schema_to_gbnf(json.dumps(booleans(2000, required=True)), time_limit_s=1e-6)


async def test_waiting_for_the_pool_does_not_count_against_a_request(model, monkeypatch):
    """Two big schemas held both pool threads past the limit, and a third client's json_object was the
    one refused: the limit now starts when the conversion does."""
    monkeypatch.setattr(grammars, "CONVERT_TIME_LIMIT_S", 0.05)
    release = threading.Event()
    busy = [grammars._pool.submit(release.wait) for _ in range(2)]
    try:
        fmt = runner_pb2.ResponseFormat(type="json_schema", json_schema='{"type": "object", "title": "queued"}')
        pending = asyncio.create_task(grammars.grammar_for(fmt, model))
        await asyncio.sleep(0.3)  # queued for six times the limit
        assert not pending.done()
    finally:
        release.set()
    (await pending).close()
    assert all(b.result() for b in busy)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(low=st.integers(-10**7, 10**7), span=st.integers(0, 10**8), probes=st.lists(st.integers(-10**8, 2 * 10**8), max_size=8))
def test_an_integer_range_accepts_exactly_its_values_spelt_as_json(model, low, span, probes):
    """Digit by digit, not one alternative per value: any range compiles in a few rules."""
    high = low + span
    gbnf = schema_to_gbnf(json.dumps({"type": "integer", "minimum": low, "maximum": high}))
    assert len(gbnf) < 4000
    for value in [low, high, low - 1, high + 1, 0, -1, *probes]:
        assert accepts(model, gbnf, str(value)) == (low <= value <= high), value
    for spelling in ("-0", "00", "01", "-01"):
        assert not accepts(model, gbnf, spelling)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.text("ab\\\"", max_size=5), min_size=1, max_size=30), probes=st.lists(st.text("ab\\\"", max_size=5), max_size=6))
def test_an_enum_accepts_exactly_its_values(model, values, probes):
    """As a prefix tree (values that begin alike share a path), still exactly the listed values."""
    gbnf = schema_to_gbnf(json.dumps({"enum": values}))
    for text in values + probes:
        assert accepts(model, gbnf, json.dumps(text)) == (text in values), text


def test_a_refused_schema_is_refused_from_the_cache_the_second_time(monkeypatch):
    """A schema that cost its whole time limit to refuse must not cost it again when resent."""
    from modelrunner.runner import grammars

    calls = []
    real = grammars.schema_to_gbnf

    def counted(text: str, limit: float) -> str:
        calls.append(text)
        return real(text, limit)

    monkeypatch.setattr(grammars, "schema_to_gbnf", counted)
    schema = json.dumps({"type": "string", "pattern": "^refused-once$"})
    for _ in range(3):
        with pytest.raises(UnsupportedSchema) as err:
            grammars.gbnf_for_schema(schema)
        assert err.value.keyword == "pattern" and str(err.value).startswith("pattern: ")
    assert calls == [schema]


UNION_KEYS = ["kind", "k", "name", "", "x y"]  # keys and tags that begin alike, "" among them
TAGS = ["a", "ab", "b", "", "a b"]
UNION_VALUES = {"boolean": True, "integer": 7, "string": "ab", "null": None}


def union_members() -> st.SearchStrategy[dict]:
    return st.one_of(
        st.sampled_from([{"type": kind} for kind in sorted(UNION_VALUES)]),
        st.builds(lambda tag: {"const": tag}, st.sampled_from(TAGS)),
        st.builds(lambda tag: {"enum": [tag]}, st.sampled_from(TAGS)),
    )


def union_objects() -> st.SearchStrategy[dict]:
    def obj(props: dict, required: list) -> dict:
        return {"type": "object", "properties": props, "required": [k for k in required if k in props]}

    keys = st.sampled_from(UNION_KEYS)
    return st.builds(obj, st.dictionaries(keys, union_members(), max_size=3), st.lists(keys, unique=True, max_size=3))


def union_alternatives() -> st.SearchStrategy[dict]:
    others = st.one_of(st.builds(lambda tag: {"const": tag}, st.sampled_from(TAGS)),
                       st.sampled_from([{"type": "string"}, {"type": "null"}]))
    return st.one_of(union_objects(), union_objects(), others)


def union_allows(alternatives: list[dict], text: str) -> bool:
    """Whether one rule per alternative allows `text`: an object's members in their declared order
    (the converter's), no others; any other alternative as JSON Schema reads it."""
    try:
        value = json.loads(text)
    except ValueError:
        return False

    def allows(alt: dict) -> bool:
        if alt.get("type") != "object":
            return jsonschema.Draft202012Validator(alt).is_valid(value)
        declared = list(alt["properties"])
        return (isinstance(value, dict) and set(value) <= set(declared) and set(alt["required"]) <= set(value)
                and list(value) == sorted(value, key=declared.index)
                and all(jsonschema.Draft202012Validator(alt["properties"][k]).is_valid(v) for k, v in value.items()))

    return any(allows(alt) for alt in alternatives)


def own_value(member: dict) -> object:
    """A value the member's schema (as union_members draws it) allows."""
    return UNION_VALUES[member["type"]] if "type" in member else member.get("const", member.get("enum", [None])[0])


def union_probes(data: st.DataObject, alternatives: list[dict]) -> list[str]:
    """Answers near the union's: its objects' members, some present, in order or not, each value
    its own or another member's, spelt both ways JSON is; the tags; and cut-off answers."""
    pool = [*TAGS, *UNION_VALUES.values()]
    probes = [json.dumps(v) for v in pool]
    for alt in (a for a in alternatives if a.get("type") == "object"):
        keys = list(alt["properties"])
        present = data.draw(st.lists(st.sampled_from(keys), unique=True) if keys else st.just([]), "present")
        if data.draw(st.booleans(), "in declared order"):
            present.sort(key=keys.index)
        value = {k: own_value(alt["properties"][k]) if data.draw(st.booleans(), "own value")
                 else data.draw(st.sampled_from(pool)) for k in present}
        text = json.dumps(value, separators=data.draw(st.sampled_from([(", ", ": "), (",", ":")])))
        probes += [text, text[:data.draw(st.integers(0, len(text)), "cut")]]
    return probes


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_union_accepts_exactly_what_one_rule_per_alternative_did(model, data):
    """The prefix tree (objects' keys and const tags shared until they differ, referenced models
    looked into) against the union as it was spelt before, one rule each, and against its meaning."""
    alternatives = data.draw(st.lists(union_alternatives(), min_size=1, max_size=6), "alternatives")
    referred = {i for i, alt in enumerate(alternatives)
                if alt.get("type") == "object" and data.draw(st.booleans(), "by reference")}
    defs = {f"M{i}": alternatives[i] for i in referred}
    options = [{"$ref": f"#/$defs/M{i}"} if i in referred else alt for i, alt in enumerate(alternatives)]
    key = data.draw(st.sampled_from(["anyOf", "oneOf"]))
    factored = schema_to_gbnf(json.dumps({key: options, "$defs": defs}))
    one_rule_each = schema_to_gbnf(json.dumps({key: [{"anyOf": [o]} for o in options], "$defs": defs}))
    for text in union_probes(data, alternatives):
        legal = union_allows(alternatives, text)
        assert accepts(model, factored, text) == legal, text
        assert accepts(model, one_rule_each, text) == legal, text


def tagged_models(n: int) -> dict:
    """A discriminated union as pydantic writes it: references to models sharing a base field, then a
    Literal tag, then a field of their own."""
    models = {f"M{i}": {"title": f"M{i}", "type": "object",
                        "properties": {"name": {"title": "Name", "type": "string"},
                                       "kind": {"const": f"t{i}", "title": "Kind", "type": "string"},
                                       f"v{i}": {"title": "V", "type": "integer"}},
                        "required": ["name", "kind", f"v{i}"]} for i in range(n)}
    return {"oneOf": [{"$ref": f"#/$defs/{m}"} for m in models], "$defs": models,
            "discriminator": {"propertyName": "kind", "mapping": {f"t{i}": f"#/$defs/M{i}" for i in range(n)}}}


def test_a_union_of_256_tagged_models_leaves_few_paths_open_and_accepts_exactly_them(model, monkeypatch):
    """One rule per model left 256 paths open until the tag (1.5 s a masked step with Gemma): now the
    models share them up to the tag, which branches a digit at a time."""
    monkeypatch.setattr(json_schema_gbnf, "MAX_ALTERNATIVES", 11)  # t1, t10..t19: 11 ways on after "t1"
    gbnf = schema_to_gbnf(json.dumps(tagged_models(256)))
    for i in (0, 1, 19, 100, 255):
        assert accepts(model, gbnf, json.dumps({"name": "x", "kind": f"t{i}", f"v{i}": 3}))
        assert not accepts(model, gbnf, json.dumps({"name": "x", "kind": f"t{i}", f"v{(i + 1) % 256}": 3}))
        assert not accepts(model, gbnf, json.dumps({"kind": f"t{i}", "name": "x", f"v{i}": 3}))
    assert not accepts(model, gbnf, json.dumps({"name": "x", "kind": "t256", "v256": 3}))
    models = tagged_models(12)
    one_rule_each = models | {"oneOf": [{"anyOf": [option]} for option in models["oneOf"]]}
    with pytest.raises(UnsupportedSchema, match="oneOf: leaves 12 alternatives open at once; at most 11"):
        schema_to_gbnf(json.dumps(one_rule_each))


def test_a_union_of_objects_with_distinct_first_keys_branches_on_the_keys(monkeypatch):
    """256 objects, each with a key of its own: at most 26 paths (a letter each) open at once, not 256."""
    rng = random.Random(0)
    keys = {"".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(8)) for _ in range(256)}
    monkeypatch.setattr(json_schema_gbnf, "MAX_ALTERNATIVES", 26)
    schema_to_gbnf(json.dumps({"anyOf": [{"type": "object", "properties": {k: {"type": "string"}}, "required": [k]}
                                         for k in keys]}))


def test_a_recursive_union_of_models_compiles_and_is_enforced(model):
    """A tree of models (a branch holds a list of the union itself): each reference to a model still
    being spelt is to its rule."""
    defs = {"Leaf": {"type": "object", "properties": {"kind": {"const": "leaf"}, "v": {"type": "integer"}},
                     "required": ["kind", "v"]},
            "Branch": {"type": "object", "properties": {"kind": {"const": "branch"}, "kids": {
                "type": "array", "items": {"$ref": "#/$defs/Node"}, "maxItems": 2}}, "required": ["kind", "kids"]},
            "Node": {"anyOf": [{"$ref": "#/$defs/Leaf"}, {"$ref": "#/$defs/Branch"}]}}
    gbnf = schema_to_gbnf(json.dumps({"$ref": "#/$defs/Node", "$defs": defs}))
    tree = {"kind": "branch", "kids": [{"kind": "leaf", "v": 1}, {"kind": "branch", "kids": []}]}
    assert accepts(model, gbnf, json.dumps(tree))
    tree["kids"][0]["kind"] = "branch"
    assert not accepts(model, gbnf, json.dumps(tree))


@settings(max_examples=150 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=schema_oracle.schemas(), seed=st.integers(0, 2**32 - 1))
def test_a_schema_grammar_accepts_exactly_what_the_schema_means(model, schema, seed):
    """Against a matcher that reads the schema itself: unions of unions, a union in an object member in
    a union, unions of referenced and recursive models, tags after optional members, nullable
    alternatives, additionalProperties, consts that are prefixes of one another, "", non-ASCII and
    escaped keys and values; answers the schema allows and answers near them, cut short among them."""
    gbnf = schema_to_gbnf(json.dumps(schema))
    matcher = schema_oracle.Matcher(schema)
    for text in schema_oracle.Answers(schema, random.Random(seed)).probes(16):
        assert accepts(model, gbnf, text) == matcher.accepts(text), text
    answer = generate(model, gbnf, np.random.default_rng(seed), {t: 2.0 for t in CLOSERS}, 300, ascii_may_end=True)
    if answer is not None:
        assert matcher.accepts(answer), answer


def nested_type_lists(depth: int, copies: int) -> dict:
    schema: dict = {"type": "boolean"}
    for _ in range(depth):
        schema = {"type": ["object"] * copies, "properties": {"p": schema}, "required": ["p"]}
    return schema


def ticking_clock(monkeypatch) -> None:
    """The converter's CPU clock made one tick per look at it: a time limit becomes a count of looks,
    which bounds the work without depending on how fast this machine is."""
    ticks = iter(range(10**9))
    monkeypatch.setattr(json_schema_gbnf.time, "thread_time", lambda: next(ticks))


def test_copies_of_a_type_are_converted_once(monkeypatch):
    """Each copy converted the rest of the schema again, and copies nested in copies multiplied: 25
    copies 5 deep (1.3 KB) took 230 s of CPU, the 10 s limit unseen, as every rule made was one made
    before (the time was checked only when a rule was set). With a clock that ticks once a look, the
    conversion fits in 1000 looks, where converting each copy again would take 25**5."""
    ticking_clock(monkeypatch)
    gbnf = schema_to_gbnf(json.dumps(nested_type_lists(5, 25)), time_limit_s=1000)
    assert len(gbnf) < 2000


def test_the_time_limit_holds_where_every_rule_is_one_made_before(monkeypatch):
    """A clock that ticks once a look: 2000 members of one type set a few rules, but visit 2000 schemas."""
    ticking_clock(monkeypatch)
    with pytest.raises(UnsupportedSchema, match="took more than 100 s to convert"):
        schema_to_gbnf(json.dumps(booleans(2000, required=True)), time_limit_s=100)


def test_a_model_referred_to_many_times_or_ways_is_spelt_once(monkeypatch):
    """3000 references to one 5000-member model in a union hashed its spellings 3000 times (18 s); 1000
    ways to write the reference (#/$defs/A, #//$defs/A, ...) spelt it 1000 times (75 s). With a clock
    that ticks once a look, each fits in 20000 looks: the model's 5000 members are looked at once."""
    ticking_clock(monkeypatch)
    names = [f"a{i}" for i in range(5000)]
    defs = {"A": {"type": "object", "properties": {k: {} for k in names}, "required": names}}
    for options in ([{"$ref": "#/$defs/A"}] * 3000, [{"$ref": "#" + "/" * (k + 1) + "$defs/A"} for k in range(1000)]):
        gbnf = schema_to_gbnf(json.dumps({"anyOf": [*options, {"type": "null"}], "$defs": defs}), time_limit_s=20000)
        assert gbnf.count('"\\"a4999\\""') == 1


def test_a_type_list_of_anything_but_type_names_is_refused():
    """A list in the list was a TypeError (unhashable): a 500 from the gateway."""
    with pytest.raises(UnsupportedSchema) as err:
        schema_to_gbnf(json.dumps({"type": ["string", ["x"]], "minLength": 1}))
    assert err.value.keyword == "type"


def alike(first: int, n: int = 100) -> dict:
    """n objects alike but for the range of their one member: n paths open once its key is written."""
    return {"anyOf": [{"type": "object", "properties": {"n": {"type": "integer", "minimum": first + i}}, "required": ["n"]}
                      for i in range(n)]}


@pytest.mark.parametrize(
    "schema, paths",
    [
        ({"anyOf": [alike(0), alike(100)]}, 200),
        ({"anyOf": [alike(100 * k) for k in range(20)]}, 2000),
        ({"anyOf": [{"$ref": f"#/$defs/U{k}"} for k in range(3)], "$defs": {f"U{k}": alike(100 * k) for k in range(3)}}, 300),
        ({"anyOf": [{**alike(100 * k), "nullable": True} for k in range(2)]}, 202),
        ({"anyOf": [{"type": "array", "items": alike(100 * k)} for k in range(2)]}, 200),
        ({"anyOf": [{"enum": [chr(0x4E00 + 100 * k + i) for i in range(100)]} for k in range(2)]}, 200),
    ],
    ids=["2-unions", "20-unions", "references", "nullable", "arrays", "enums"],
)
def test_a_union_counts_the_paths_its_alternatives_open(model, schema, paths):
    """A union of unions each under the bound passed it: 20 unions of 100 alike objects left 2000 paths
    open after {"n": (a masked step 25 times a flat 100's, with the tiny GGUF's 256 tokens)."""
    with pytest.raises(UnsupportedSchema, match=f"leaves {paths} alternatives open at once"):
        schema_to_gbnf(json.dumps(schema))


def test_a_nullable_union_of_tagged_models_counts_the_paths_inside(model, monkeypatch):
    """Optional[a union of 256 tagged models]: the union inside opens 11 at most (t1, t10..t19), null one more."""
    inner = tagged_models(256)
    schema = {"anyOf": [{"oneOf": inner["oneOf"], "discriminator": inner["discriminator"]}, {"type": "null"}],
              "$defs": inner["$defs"]}
    monkeypatch.setattr(json_schema_gbnf, "MAX_ALTERNATIVES", 12)
    gbnf = schema_to_gbnf(json.dumps(schema))
    assert accepts(model, gbnf, "null")
    assert accepts(model, gbnf, json.dumps({"name": "x", "kind": "t7", "v7": 1}))
    assert not accepts(model, gbnf, json.dumps({"name": "x", "kind": "t7", "v8": 1}))
    monkeypatch.setattr(json_schema_gbnf, "MAX_ALTERNATIVES", 11)
    with pytest.raises(UnsupportedSchema, match="anyOf: leaves 12 alternatives open at once; at most 11"):
        schema_to_gbnf(json.dumps(schema))


@pytest.mark.parametrize(
    "text, allowed",
    [
        ('{"a": 1}', True), ('{"a": 1, "b": "x"}', True), ('{"a": 1, "ab": [], "": 2, "é": 3}', True),
        ('{"a": 1, "a": "x"}', False), ('{"a": 1, "\\u0061": "x"}', False), ('{"a": 1, "k": {}}', False),
        ('{"a": 1, "k\\\\": 0}', True), ('{"a": 1, "k\\\\": 2}', False), ('{"a": 1, "k\\u005c": 2}', False),
        ('{"a": 1, "kk": 2}', True),
    ],
)
def test_an_additional_property_is_named_unlike_every_declared_one(model, text, allowed):
    """{"a": "x"} got through where "a" is an integer: the extra member's key was any string. \\u
    escapes are not written until a key leaves the declared ones' prefix tree ("k\\u005c" is "k\\")."""
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "k": {"type": "string"}, "k\\": {"const": 0}},
              "required": ["a"], "additionalProperties": True}
    assert accepts(model, schema_to_gbnf(json.dumps(schema)), text) == allowed
    assert accepts(model, schema_to_gbnf(json.dumps(schema)), text.replace('"a": 1', '"a": "x"')) is False


def recursive_models(n: int) -> dict:
    """n tagged models, each holding a list of the union of them all (an AST's node types)."""
    union = {"anyOf": [{"$ref": f"#/$defs/N{k}"} for k in range(n)]}
    defs = {f"N{k}": {"type": "object", "properties": {"kind": {"const": f"n{k}"}, "kids": {"type": "array", "items": union}},
                      "required": ["kind"]} for k in range(n)}
    return {**union, "$defs": defs}


def test_recursive_models_in_a_union_are_each_visited_once(model):
    """A model still being spelt was also visited as a rule, nesting each twice: from 9 models on, "nests
    deeper than 64 levels" (the converter before the prefix trees took 15)."""
    gbnf = schema_to_gbnf(json.dumps(recursive_models(16)))
    tree = {"kind": "n3", "kids": [{"kind": "n15"}, {"kind": "n0", "kids": [{"kind": "n9", "kids": []}]}]}
    assert accepts(model, gbnf, json.dumps(tree))
    tree["kids"][1]["kids"][0]["kind"] = "n16"
    assert not accepts(model, gbnf, json.dumps(tree))


@pytest.mark.parametrize("text, keyword", [('{"const": NaN}', "const"), ('{"enum": [1, Infinity]}', "enum"),
                                           ('{"anyOf": [{"const": -Infinity}, {"type": "null"}]}', "const")])
def test_a_value_that_is_not_json_is_refused(text, keyword):
    """json.loads reads NaN and Infinity, and json.dumps wrote them back: a grammar for text that is not JSON."""
    with pytest.raises(UnsupportedSchema) as err:
        schema_to_gbnf(text)
    assert err.value.keyword == keyword
