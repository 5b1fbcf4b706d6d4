"""What a JSON schema's grammar should accept, read off the schema without the converter: a matcher
over the answer's text (the sets of positions each part of the schema can end at), no prefix trees nor
shared rules. It reads the schema as the converter means it: an object's members in their declared
order and no others (additionalProperties false unless given), each an additional property named
unlike every declared one; one optional space after each token; a const or enum value spelt as
json.dumps(..., ensure_ascii=False) writes it; integers of up to 16 digits, "-0" only where unbounded;
oneOf as anyOf. Plus schemas with rich unions to try it on (unions of unions, unions of referenced and
recursive models, tags after optional members, nullable alternatives, additionalProperties, consts
that are prefixes of one another, "" and non-ASCII and escaped keys and values), and answers near
theirs."""

from __future__ import annotations

import json
import random
import re

from hypothesis import strategies as st

_HEX = frozenset("0123456789abcdefABCDEF")
_INTEGRAL = re.compile(r"0|[1-9][0-9]{0,15}")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]{0,15})(?:\.[0-9]{1,16})?(?:[eE][-+]?(?:0|[1-9][0-9]{0,15}))?")
_STRING_KEYWORDS = {"minLength", "maxLength"}
_ARRAY_KEYWORDS = {"items", "prefixItems", "minItems", "maxItems"}
_OBJECT_KEYWORDS = {"properties", "required", "additionalProperties"}


class Matcher:
    """`accepts(text)`: whether the schema's grammar should allow exactly `text`."""

    def __init__(self, root: object) -> None:
        self.root = root

    def accepts(self, text: str) -> bool:
        return len(text) in self.ends(self.root, text, 0)

    def resolve(self, ref: str) -> object:
        target = self.root
        for part in [p for p in ref[1:].split("/") if p]:
            target = target[part.replace("~1", "/").replace("~0", "~")]
        return target

    @staticmethod
    def space(s: str, i: int) -> set[int]:
        return {i, i + 1} if s.startswith(" ", i) else {i}

    def token(self, s: str, i: int, text: str) -> set[int]:
        return self.space(s, i + len(text)) if s.startswith(text, i) else set()

    @staticmethod
    def string(s: str, i: int) -> tuple[int, str, int] | None:
        """(end, value, characters) of the JSON string at i, as the grammar's char rule spells one."""
        if not s.startswith('"', i):
            return None
        j, value = i + 1, []
        while j < len(s):
            c = s[j]
            if c == '"':
                return j + 1, "".join(value), len(value)
            if c == "\\":
                if s[j + 1:j + 2] and s[j + 1] in '"\\/bfnrt':
                    value.append(json.loads(f'"\\{s[j + 1]}"'))
                    j += 2
                elif s.startswith("u", j + 1) and len(s) >= j + 6 and set(s[j + 2:j + 6]) <= _HEX:
                    value.append(chr(int(s[j + 2:j + 6], 16)))
                    j += 6
                else:
                    return None
            elif c == "\x7f" or ord(c) < 0x20:
                return None
            else:
                value.append(c)
                j += 1
        return None

    def ends(self, schema: object, s: str, i: int) -> set[int]:
        if schema is True or schema == {}:
            return set().union(*(self.ends({"type": t}, s, i) for t in
                                 ("object", "array", "string", "number", "boolean", "null")))
        assert isinstance(schema, dict)
        if "$ref" in schema:
            return self.ends(self.resolve(schema["$ref"]), s, i)
        if schema.get("nullable") is True:
            rest = {k: v for k, v in schema.items() if k != "nullable"}
            return self.ends(rest, s, i) | self.token(s, i, "null")
        if "const" in schema or "enum" in schema:
            values = [schema["const"]] if "const" in schema else schema["enum"]
            return set().union(*(self.token(s, i, json.dumps(v, ensure_ascii=False)) for v in values))
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return set().union(*(self.ends(o, s, i) for o in schema[key]))
        kind = schema.get("type")
        if isinstance(kind, list):
            return set().union(*(self.ends({**schema, "type": t}, s, i) for t in kind))
        if kind is None:
            kind = ("string" if _STRING_KEYWORDS & schema.keys() else "array" if _ARRAY_KEYWORDS & schema.keys()
                    else "object" if _OBJECT_KEYWORDS & schema.keys() else None)
            if kind is None:
                return self.ends(True, s, i)
        if kind == "string":
            found = self.string(s, i)
            if found is None or found[2] < schema.get("minLength", 0) or found[2] > schema.get("maxLength", found[2]):
                return set()
            return self.space(s, found[0])
        if kind == "integer":
            return self.integer(schema, s, i)
        if kind == "number":
            return {e for j in range(i + 1, min(len(s), i + 60) + 1)
                    if _NUMBER.fullmatch(s[i:j]) and not ("minimum" in schema and s[i] == "-")
                    for e in self.space(s, j)}
        if kind in ("boolean", "null"):
            return set().union(*(self.token(s, i, t) for t in (("true", "false") if kind == "boolean" else ("null",))))
        if kind == "array":
            return self.array(schema, s, i)
        if kind == "object":
            return self.object(schema, s, i)
        raise AssertionError(f"unknown type {kind!r}")

    def integer(self, schema: dict, s: str, i: int) -> set[int]:
        bounded = "minimum" in schema or "maximum" in schema
        low, high = schema.get("minimum", -(10**16 - 1)), schema.get("maximum", 10**16 - 1)
        negative = s.startswith("-", i)
        start = i + negative
        out = set()
        for j in range(start + 1, min(len(s), start + 16) + 1):
            if _INTEGRAL.fullmatch(s[start:j]):
                value = -int(s[start:j]) if negative else int(s[start:j])
                if not bounded or (low <= value <= high and not (negative and value == 0)):
                    out |= self.space(s, j)
        return out

    def after_comma(self, s: str, ends: set[int]) -> set[int]:
        return {e for pos in ends if s.startswith(",", pos) for e in self.space(s, pos + 1)}

    def closed(self, s: str, ends: set[int], closer: str) -> set[int]:
        return {e for pos in ends if s.startswith(closer, pos) for e in self.space(s, pos + 1)}

    def array(self, schema: dict, s: str, i: int) -> set[int]:
        if not s.startswith("[", i):
            return set()
        ends = self.space(s, i + 1)
        if "prefixItems" in schema:
            for n, item in enumerate(schema["prefixItems"]):
                ends = {e for pos in (self.after_comma(s, ends) if n else ends) for e in self.ends(item, s, pos)}
            return self.closed(s, ends, "]")
        low, high = schema.get("minItems", 0), schema.get("maxItems")
        out, count = set(), 0
        while ends:
            if count >= low:
                out |= self.closed(s, ends, "]")
            if high is not None and count >= high:
                break
            ends = {e for pos in (self.after_comma(s, ends) if count else ends)
                    for e in self.ends(schema.get("items", True), s, pos)}
            count += 1
        return out

    def member(self, s: str, starts: set[int], key: str | None, value: object, declared: dict) -> set[int]:
        """Where a member (`key`, or any key none of `declared` has) and its value can end."""
        out = set()
        for start in starts:
            found = self.string(s, start)
            if found is None:
                continue
            end, name, _ = found
            if key is None and name in declared:
                continue
            if key is not None and s[start:end] != json.dumps(key, ensure_ascii=False):
                continue
            for colon in self.space(s, end):
                if s.startswith(":", colon):
                    for pos in self.space(s, colon + 1):
                        out |= self.ends(value, s, pos)
        return out

    def object(self, schema: dict, s: str, i: int) -> set[int]:
        if not s.startswith("{", i):
            return set()
        declared = schema.get("properties", {})
        extra = schema.get("additionalProperties", False if "properties" in schema else None)
        required = set(schema.get("required", []))
        first = self.space(s, i + 1)  # no member yet
        later: set[int] = set()  # one written: the next after a ","
        if extra is None:  # no properties, no additionalProperties: any members
            declared, extra = {}, True
        for key, sub in declared.items():
            written = self.member(s, first, key, sub, declared) | self.member(s, self.after_comma(s, later), key, sub, declared)
            if key in required:
                first, later = set(), written
            else:
                later |= written
        if extra is not False:
            value = True if extra is True else extra
            frontier, seen = set(later), set(later)
            frontier |= self.member(s, first, None, value, declared)
            seen |= frontier
            while frontier:
                frontier = self.member(s, self.after_comma(s, frontier), None, value, declared) - seen
                seen |= frontier
            later = seen
        return self.closed(s, first | later, "}")


# schemas -------------------------------------------------------------------------------------------
KEYS = ["a", "ab", "", "b", 'q"', "é", "x y", "k\\", "n\n", "kind"]
CONSTS = ["", "a", "ab", "a b", "é", "éa", 'q"', "\\", "\n", 0, 1, -1, 10, 1.5, True, False, None,
          {"a": 1}, {}, [], [1, "a"], {"a": {"b": None}}, {"ab": 1}]
TAGS = ["a", "ab", "", "é", 1, None, True]


def ref(name: str) -> dict:
    return {"$ref": f"#/$defs/{name}"}


def leaves(refs: bool) -> st.SearchStrategy[dict]:
    counts = st.integers(0, 3)
    options = [
        st.just({"type": "string"}),
        st.builds(lambda lo, extra: {"type": "string", "minLength": lo, "maxLength": lo + extra}, counts, counts),
        st.just({"type": "integer"}),
        st.builds(lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span},
                  st.integers(-12, 12), st.integers(0, 15)),
        st.sampled_from([{"type": "number"}, {"type": "number", "minimum": 0}, {"type": "boolean"},
                         {"type": "null"}, {"type": ["string", "null"], "maxLength": 2}, {}, {"type": "object"}]),
        st.builds(lambda v: {"const": v}, st.sampled_from(CONSTS)),
        st.builds(lambda vs: {"enum": vs}, st.lists(st.sampled_from(CONSTS), min_size=1, max_size=4, unique_by=json.dumps)),
    ]
    if refs:  # to the models (objects) and to U0, a union of them: never a path back without a "{"
        options.append(st.sampled_from([ref(d) for d in ("D0", "D1", "D2", "U0")]))
    return st.one_of(*options)


def objects(children: st.SearchStrategy, tagged: bool = False) -> st.SearchStrategy[dict]:
    """Objects; `tagged`: with a const tag, first or after an optional member (pydantic's Literal field)."""

    def build(props, required, extra, tag_key, tag, after_one) -> dict:
        required = [k for k in required if k in props and (not tagged or k != tag_key)]
        if tagged:
            items = [(k, v) for k, v in props.items() if k != tag_key]
            at = 1 if after_one else 0
            props = dict([*items[:at], (tag_key, {"const": tag}), *items[at:]])
            required.append(tag_key)
        schema = {"type": "object", "properties": props, "required": required}
        if extra is not None:
            schema["additionalProperties"] = extra
        return schema

    keys = st.sampled_from(KEYS)
    extra = st.sampled_from([None, False, True, {"type": "integer"}, {"const": "a"}])
    return st.builds(build, st.dictionaries(keys, children, max_size=3), st.lists(keys, unique=True, max_size=3),
                     extra, st.sampled_from(["kind", "a", ""]), st.sampled_from(TAGS), st.booleans())


def composite(children: st.SearchStrategy) -> st.SearchStrategy[dict]:
    union = st.sampled_from(["anyOf", "oneOf"])
    return st.one_of(
        objects(children),
        objects(children, tagged=True),
        st.builds(lambda item, lo, extra: {"type": "array", "items": item, "minItems": lo, "maxItems": lo + extra},
                  children, st.integers(0, 1), st.integers(0, 2)),
        st.builds(lambda items: {"type": "array", "prefixItems": items}, st.lists(children, min_size=1, max_size=2)),
        st.builds(lambda key, options: {key: options}, union, st.lists(children, min_size=1, max_size=4)),
        st.builds(lambda key, options: {key: options}, union,
                  st.lists(st.one_of(objects(children), objects(children, tagged=True)), min_size=2, max_size=4)),
        st.builds(lambda c: c if "$ref" in c else {**c, "nullable": True}, children),
    )


@st.composite
def schemas(draw) -> dict:
    """A root and $defs: models D0..D2 (objects, maybe tagged) that may refer to any of the defs, U0 a
    union of references to them, tagged objects and leaves (pydantic's Union of models)."""
    inner = st.recursive(leaves(True), composite, max_leaves=5)
    model = st.one_of(objects(inner), objects(inner, tagged=True))
    option = st.one_of(st.sampled_from([ref("D0"), ref("D1"), ref("D2")]), objects(inner, tagged=True), leaves(False))
    defs = {d: draw(model, d) for d in ("D0", "D1", "D2")}
    defs["U0"] = {draw(st.sampled_from(["anyOf", "oneOf"])): draw(st.lists(option, min_size=1, max_size=4), "U0")}
    root = draw(st.one_of(inner, st.builds(lambda o: {"anyOf": o}, st.lists(option, min_size=2, max_size=5))), "root")
    if "$ref" in root:
        root = {"anyOf": [root, {"type": "null"}]}
    return {**root, "$defs": defs}


# answers -------------------------------------------------------------------------------------------
class Answers:
    """Texts a schema allows, and texts near them: members dropped, repeated, reordered or unknown,
    other consts (prefixes of one another among them), values out of range, two spaces, cut short."""

    def __init__(self, root: dict, rng: random.Random) -> None:
        self.root, self.rng = root, rng

    def space(self, wild: bool) -> str:
        r = self.rng.random()
        return "  " if wild and r < 0.05 else " " if r < 0.5 else ""

    def probes(self, n: int) -> list[str]:
        out = []
        for k in range(n):
            text = self.text(self.root, 0, wild=k % 2 == 1)
            if text is not None:
                out.append(text)
                if self.rng.random() < 0.3:
                    out.append(text[:self.rng.randrange(len(text) + 1)])
        return out

    def text(self, schema: object, depth: int, wild: bool) -> str | None:
        rng, sp = self.rng, self.space
        odd = wild and rng.random() < 0.3  # this part goes wrong
        if depth > 6:
            return None
        if schema is True or schema == {}:
            return rng.choice(["1", '"x"', "null", "[]", "{}", '{"a": 1}', "true"])
        if "$ref" in schema:
            return self.text(Matcher(self.root).resolve(schema["$ref"]), depth + 1, wild)
        if schema.get("nullable") is True:
            if rng.random() < 0.3:
                return "null" + sp(wild)
            return self.text({k: v for k, v in schema.items() if k != "nullable"}, depth, wild)
        if "const" in schema or "enum" in schema:
            values = [schema["const"]] if "const" in schema else schema["enum"]
            separators = rng.choice([(", ", ": "), (",", ":")]) if odd else (", ", ": ")
            return json.dumps(rng.choice(CONSTS if odd else values), ensure_ascii=False, separators=separators) + sp(wild)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self.text(rng.choice(schema[key]), depth + 1, wild)
        kind = schema.get("type")
        if isinstance(kind, list):
            return self.text({**schema, "type": rng.choice(kind)}, depth, wild)
        if kind == "string":
            lo, hi = schema.get("minLength", 0), schema.get("maxLength", 4)
            n = rng.randint(max(0, lo - 1), hi + 1) if odd else rng.randint(lo, hi)
            return json.dumps("".join(rng.choice('ab"é\\\n') for _ in range(n)), ensure_ascii=False) + sp(wild)
        if kind == "integer":
            lo, hi = schema.get("minimum", -20), schema.get("maximum", 20)
            value = rng.randint(lo - 2, hi + 2) if odd else rng.randint(lo, hi)
            return (rng.choice(["-0", "01", "1.0", str(value)]) if odd else str(value)) + sp(wild)
        if kind == "number":
            text = rng.choice(["0", "1.5", "-2", "1e5", "3.25E-2"] + (["-1.5", "01", "1.", ".5"] if odd else []))
            return (text if odd or "minimum" not in schema else text.lstrip("-")) + sp(wild)
        if kind == "boolean":
            return rng.choice(["true", "false"]) + sp(wild)
        if kind == "null":
            return ("nul" if odd else "null") + sp(wild)
        if kind == "array":
            if "prefixItems" in schema:
                items = list(schema["prefixItems"])
                if odd:
                    items = items[:-1] if rng.random() < 0.5 else items + items[:1]
            else:
                lo, hi = schema.get("minItems", 0), schema.get("maxItems", 3)
                items = [schema.get("items", True)] * (rng.randint(max(0, lo - 1), hi + 1) if odd else rng.randint(lo, hi))
            parts = [self.text(item, depth + 1, wild) for item in items]
            return None if None in parts else "[" + sp(wild) + ("," + sp(wild)).join(parts) + "]" + sp(wild)
        if kind == "object":
            if "properties" not in schema and "additionalProperties" not in schema:
                return rng.choice(["{}", '{"a": 1}', '{"b":[]}'])
            props, required = schema.get("properties", {}), set(schema.get("required", []))
            members = [(k, v) for k, v in props.items() if k in required or rng.random() < 0.5]
            extra = schema.get("additionalProperties", False)
            if extra is not False and rng.random() < 0.5:
                members.append((rng.choice(["zz", "a", "é", "ab"]), True if extra is True else extra))
            if odd:
                r = rng.random()
                if r < 0.25 and members:
                    members.pop(rng.randrange(len(members)))
                elif r < 0.5 and len(members) > 1:
                    rng.shuffle(members)
                elif r < 0.7 and members:
                    members.append(rng.choice(members))
                else:
                    members.append((rng.choice([*KEYS, "zz"]), rng.choice([{"const": rng.choice(CONSTS)}, True])))
            parts = []
            for key, sub in members:
                value = self.text(sub, depth + 1, wild)
                if value is None:
                    return None
                parts.append(json.dumps(key, ensure_ascii=False) + sp(wild) + ":" + sp(wild) + value)
            return "{" + sp(wild) + ("," + sp(wild)).join(parts) + "}" + sp(wild)
        return rng.choice(["1", '"x"', "null", "{}"])
