"""JSON Schema -> GBNF (llama.cpp's grammar format), with bounded repetition.

Why our own: llama-cpp-python's converter spells `maxLength: 5000` as 5000 nested optionals, which
llama.cpp's parser refuses after seconds, and it silently drops keywords it does not know (an
integer's `minimum`), so the output may break the schema. Here counts become GBNF's `x{m,n}`, which
llama.cpp expands into n-m small rules; its parser refuses m > 2000 and reads n > 2000 as unbounded,
so larger counts are split into blocks. A keyword that cannot be enforced is an UnsupportedSchema
naming it; annotations (title, description, ...) are ignored.

The grammar stays linear in the schema (optional members are a chain, rule names are cut short, equal
rules are one) and is bounded as it is built, in rules, bytes and CPU time: a small schema must not cost
the engine gigabytes. So is what one masked step costs: llama.cpp checks the vocabulary against every path
its grammar has open, so integers are spelt digit by digit, alternatives that begin alike (enum values, an
object's first members, a union's objects and consts) share a prefix tree until their text differs, and
an object or a union may leave only so many paths open at once (a union counting all that an alternative
which is itself a union, a list of one, ... opens). An additional property is named unlike every
declared one, which it would otherwise stand in for with any value.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

LLAMA_REPEAT_LIMIT = 2000  # llama-grammar.cpp's MAX_REPETITION_THRESHOLD
BLOCK = 1000
MAX_COUNT = 1_000_000  # maxLength / maxItems past this are refused
MAX_DEPTH = 64
MAX_RULES = 5000
MAX_GBNF_BYTES = 1 << 20  # llama.cpp compiles 1 MiB in ~0.3 s, ~10 MB; the Runner caches 128 grammars
MAX_EXPANSION = 100_000  # rules llama.cpp writes out for x{m,n} (n - m each): ~200 bytes, 0.5 us apiece
MAX_OPTIONAL = 128  # per object: each is a path llama.cpp checks the vocabulary against at every step
MAX_NAME = 40  # a rule name's characters: names built from nested keys must not grow with depth
MAX_LITERALS = 1024  # enum values
MAX_TRIE_DEPTH = 32  # branch points a prefix tree nests, at most
MAX_INT_DIGITS = 16
MAX_ALTERNATIVES = 128  # paths a union or an enum leaves open at once, once those that begin alike share theirs

ANNOTATIONS = frozenset({
    "$schema", "$id", "$comment", "$defs", "definitions", "title", "description", "default",
    "examples", "deprecated", "readOnly", "writeOnly", "format", "contentEncoding", "contentMediaType",
    "discriminator",  # OpenAPI's (pydantic writes it on tagged unions): the alternatives' consts enforce it
})
KEYWORDS = {
    "string": {"minLength", "maxLength"},
    "integer": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
    "number": {"minimum", "exclusiveMinimum"},
    "array": {"items", "prefixItems", "minItems", "maxItems", "uniqueItems"},
    "object": {"properties", "required", "additionalProperties"},
    "boolean": set(),
    "null": set(),
}
COMMON = {"type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "nullable"}

PRIMITIVES = {
    "space": '" "?',
    "char": r'[^"\\\x7F\x00-\x1F] | [\\] (["\\/bfnrt] | "u" [0-9a-fA-F]{4})',
    "integral-part": "[0] | [1-9] [0-9]{0,15}",
    "decimal-part": "[0-9]{1,16}",
    "boolean": '("true" | "false") space',
    "null": '"null" space',
    "number": '"-"? integral-part ("." decimal-part)? ([eE] [-+]? integral-part)? space',
    "unsigned-number": 'integral-part ("." decimal-part)? ([eE] [-+]? integral-part)? space',
    "integer": '"-"? integral-part space',
    "string": r'"\"" char* "\"" space',
    "value": "object | array | string | number | boolean | null",
    "object": '"{" space (string ":" space value ("," space string ":" space value)*)? "}" space',
    "array": '"[" space (value ("," space value)*)? "]" space',
}
FORMATS = {
    "date": '[0-9]{4} "-" ("0" [1-9] | "1" [0-2]) "-" ("0" [1-9] | [1-2] [0-9] | "3" [0-1])',
    "time": '([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{3})? '
            '("Z" | [+-] ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9])',
    "uuid": '[0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12}',
}
_PRIMITIVE_DEPS = {
    "char": (), "integral-part": (), "decimal-part": (), "space": (),
    "boolean": ("space",), "null": ("space",), "integer": ("integral-part", "space"),
    "number": ("integral-part", "decimal-part", "space"),
    "unsigned-number": ("integral-part", "decimal-part", "space"),
    "string": ("char", "space"), "value": ("object", "array", "string", "number", "boolean", "null"),
    "object": ("string", "value", "space"), "array": ("value", "space"),
}
_NAME = re.compile(r"[^a-zA-Z0-9-]+")


class UnsupportedSchema(ValueError):
    """The schema uses a keyword (or a value of one) that the grammar cannot enforce."""

    def __init__(self, keyword: str, message: str) -> None:
        super().__init__(f"{keyword}: {message}")
        self.keyword = keyword


def literal(text: str) -> str:
    """A GBNF string literal matching `text` exactly."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


@dataclass(frozen=True)
class Symbol:
    """A GBNF symbol in a spelling (a rule's name, a group): a prefix tree shares it only whole."""

    gbnf: str


Item = str | Symbol  # a str is JSON text, matched literally: a prefix tree shares it character by character
Spelling = tuple[Item, ...]


def literal_choice(texts: Iterable[str]) -> str:
    """GBNF matching exactly one of `texts`, as a prefix tree: values that begin alike share that
    beginning, so llama.cpp's sampler follows a path per distinct next character, not one per value
    (1024 enum values spelt out: about a second a masked step with Gemma)."""
    return prefix_tree((t,) for t in sorted(set(texts)))[0]


def prefix_tree(spellings: Iterable[Spelling], paths: Callable[[Symbol], int] = lambda _: 1) -> tuple[str, int]:
    """GBNF matching exactly one of `spellings`, where those that begin alike share that beginning, so
    llama.cpp's grammar opens a path per distinct next character or symbol, not one per spelling; and
    the most paths one of its branch points opens, a symbol there counting the `paths` its rule opens
    (a union's alternative that is itself a union opens all of its own)."""
    return _tree(list(dict.fromkeys(tuple(i for i in s if i != "") for s in spellings)), 0, paths)


def _tree(spellings: list[Spelling], depth: int, paths: Callable[[Symbol], int]) -> tuple[str, int]:
    """`spellings` distinct; () among them makes the whole optional."""
    lead, spellings = _shared_lead(spellings)
    optional = () in spellings
    rest = [s for s in spellings if s]

    def opened(head: Item) -> int:
        return paths(head) if isinstance(head, Symbol) else 1

    if depth >= MAX_TRIE_DEPTH or len(rest) < 2:  # deep enough for the gain; bounds the recursion on both sides
        parts, width = [_spell(s) for s in rest], sum(opened(s[0]) for s in rest) + optional
    else:
        groups: dict[Item, list[Spelling]] = {}
        for s in rest:
            groups.setdefault(s[0][0] if isinstance(s[0], str) else s[0], []).append(s)
        branches = [_tree(group, depth + 1, paths) for group in groups.values()]
        parts = [gbnf for gbnf, _ in branches]
        width = max(sum(map(opened, groups)) + optional, *(w for _, w in branches))
    body = " | ".join(parts)
    if optional and body:
        body = f"({body})?"
    elif len(parts) > 1 and (depth or lead):
        body = f"({body})"
    return " ".join(p for p in (*lead, body) if p), width


def _shared_lead(spellings: list[Spelling]) -> tuple[list[str], list[Spelling]]:
    """The GBNF of what all of `spellings` begin with (whole items, then the characters their texts
    share), and the spellings past it. A loop, not a recursion: alternatives may share long chains."""
    lead: list[str] = []
    while len(spellings) > 1 and all(spellings):
        first = spellings[0]
        n = 0
        while all(len(s) > n and s[n] == first[n] for s in spellings):
            n += 1
        if n:
            lead.append(_spell(first[:n]))
        spellings = [s[n:] for s in spellings]
        heads = [s[0] for s in spellings] if all(spellings) else []
        prefix = os.path.commonprefix(heads) if all(isinstance(h, str) for h in heads) else ""
        if not prefix:
            break
        lead.append(literal(prefix))
        spellings = [((s[0][len(prefix):],) if s[0] != prefix else ()) + s[1:] for s in spellings]
    return lead, spellings


def _spell(spelling: Spelling) -> str:
    return " ".join(literal(i) if isinstance(i, str) else i.gbnf for i in spelling)


def schema_to_gbnf(schema_text: str, time_limit_s: float = math.inf) -> str:
    """The GBNF (root rule "root") of a JSON schema given as JSON text. The time limit is in this
    thread's CPU time, so it counts the conversion's own work: not a queue, nor other threads."""
    try:
        return _Converter(json.loads(schema_text), time_limit_s).convert()
    except ValueError as exc:
        if isinstance(exc, UnsupportedSchema):
            raise
        raise UnsupportedSchema("json_schema", f"is not valid JSON: {exc}") from None
    except RecursionError:
        raise UnsupportedSchema("json_schema", f"nests deeper than {MAX_DEPTH} levels") from None


class _Converter:
    def __init__(self, root: Any, time_limit_s: float) -> None:
        self._root = root
        self._rules: dict[str, str] = {}
        # A reference's rule and spellings are keyed by what it points at (id() of a part of the root, which
        # lives as long as this): "#/$defs/A" and "#/$defs//A" are one rule, not a conversion each.
        self._refs: dict[int, str] = {}
        self._named: dict[str, str] = {}  # body -> name: an equal rule is made once
        self._ref_spellings: dict[int, list[Spelling] | None] = {}  # None: being worked out
        self._ref_paths: dict[int, int] = {}  # what a referenced object's rule opens, with its spellings
        # rule -> the paths llama.cpp opens in it at once, where more than one: a union's alternative that
        # is a rule (a union, a list of one, ...) opens all of its own, not one
        self._paths: dict[str, int] = {}
        self._suffixes: dict[str, int] = {}  # base name -> last suffix given: no rescan per rule
        self._bytes = 0
        self._expansion = 0
        self._time_limit_s = time_limit_s
        self._deadline = time.thread_time() + time_limit_s

    def convert(self) -> str:
        self._put("root", "")  # reserved first: the rule of a member named "" would be called "root" too
        self._put("root", self._visit(self._root, "root", 0))
        return "\n".join(f"{name} ::= {body}" for name, body in self._rules.items()) + "\n"

    # rules -------------------------------------------------------------------------------------
    def _put(self, name: str, body: str) -> None:
        """Sets a rule, refusing the schema as soon as the grammar passes a bound."""
        self._bytes += len(f"{name} ::= {body}\n".encode("utf-8", "surrogatepass"))
        if self._bytes > MAX_GBNF_BYTES:
            raise UnsupportedSchema(
                "json_schema",
                f"is too large: its grammar passes {MAX_GBNF_BYTES} bytes; simplify it (fewer properties, "
                "optional properties, enum values or alternatives, shorter names)",
            )
        self._tick()
        self._rules[name] = body

    def _tick(self) -> None:
        """Refuses the schema once its conversion has taken its CPU time. Called for each schema visited and
        each rule set: a rule equal to one made before sets nothing, so `_put` alone is not called often
        enough (type lists of 30 copies nested 4 deep: 2 minutes without a rule set)."""
        if time.thread_time() > self._deadline:
            raise UnsupportedSchema("json_schema", f"took more than {self._time_limit_s:g} s to convert: simplify it")

    def _expand(self, rules: int) -> None:
        """Counts the rules llama.cpp generates for a repetition: a few bytes of GBNF, a lot of engine."""
        self._expansion += rules
        if self._expansion > MAX_EXPANSION:
            raise UnsupportedSchema(
                "json_schema",
                f"is too large: its ranges of lengths and item counts (maxLength - minLength, maxItems - minItems) "
                f"add up to more than the {MAX_EXPANSION} the engine spells out; use fewer or narrower ones",
            )

    def _add(self, name: str, body: str) -> str:
        """The name of a rule with this body: an existing one, or a new one under a fresh name derived
        from `name`. One rule for equal bodies keeps the grammar small, and lets the alternatives of a
        union share a member they spell alike (models with the same base fields) in its prefix tree."""
        if body in self._named:
            return self._named[body]
        base = _NAME.sub("-", name).strip("-")[-MAX_NAME:].strip("-") or "r"
        if base in PRIMITIVES or base in FORMATS:
            base += "-"
        n = self._suffixes.get(base, 1)
        unique = base if n == 1 else f"{base}{n}"
        while unique in self._rules:
            n += 1
            unique = f"{base}{n}"
        self._suffixes[base] = n
        if len(self._rules) >= MAX_RULES:
            raise UnsupportedSchema("json_schema", f"needs more than {MAX_RULES} grammar rules: simplify it")
        self._put(unique, body)
        if body:  # an empty body is a name reserved for a rule still being made
            self._named[body] = unique
        return unique

    def _primitive(self, name: str) -> str:
        if name not in self._rules:
            self._put(name, PRIMITIVES[name])
            for dep in _PRIMITIVE_DEPS[name]:
                self._primitive(dep)
        return name

    def _repeat(self, symbol: str, low: int, high: int | None) -> str:
        """`symbol` (one GBNF symbol) low..high times (high None: unbounded)."""
        if high is not None and high <= LLAMA_REPEAT_LIMIT and low <= LLAMA_REPEAT_LIMIT:
            if high == 0:
                return ""
            self._expand(high - low)
            return f"{symbol}{{{low}}}" if low == high else f"{symbol}{{{low},{high}}}"
        if high is None and low <= LLAMA_REPEAT_LIMIT:
            self._expand(1)
            return f"{symbol}{{{low},}}"
        block = self._add(f"{symbol}-block", f"{symbol}{{{BLOCK}}}")
        q, r = divmod(low, BLOCK)
        head = " ".join(p for p in (self._repeat(block, q, q), self._repeat(symbol, r, r)) if p)
        if high is None:
            tail = f"{symbol}*"
        elif high == low:
            tail = ""
        else:
            # 0..k = (blocks 0..q-1, then 0..BLOCK-1 more) | (q blocks, then 0..r more): every count once.
            q, r = divmod(high - low, BLOCK)
            short = " ".join(p for p in (self._repeat(block, 0, q - 1), self._repeat(symbol, 0, BLOCK - 1)) if p)
            full = " ".join(p for p in (self._repeat(block, q, q), self._repeat(symbol, 0, r)) if p)
            tail = f"(({short}) | ({full}))" if q else f"({full})"
        return f"{head} {tail}".strip()

    def _separated(self, item: str, low: int, high: int | None, name: str) -> str:
        """`item` low..high times with `"," space` between."""
        if high == 0:
            return ""
        more = self._add(f"{name}-more", f'"," space {item}')
        rest = self._repeat(more, max(low - 1, 0), None if high is None else high - 1)
        body = f"{item} {rest}".strip()
        # Named rather than grouped: llama.cpp refuses a quantified group that holds a long repetition.
        return body if low > 0 else f"{self._add(f'{name}-items', body)}?"

    # schemas ------------------------------------------------------------------------------------
    def _visit(self, schema: Any, name: str, depth: int) -> str:
        """The name of a rule matching `schema`."""
        name = name[-MAX_NAME:]  # the path of keys so far: kept short, or each level copies every one above
        self._tick()
        if depth > MAX_DEPTH:
            raise UnsupportedSchema("json_schema", f"nests deeper than {MAX_DEPTH} levels")
        if schema is True or schema == {}:
            return self._primitive("value")
        if schema is False:
            raise UnsupportedSchema("json_schema", "false allows no value at all")
        if not isinstance(schema, dict):
            raise UnsupportedSchema("json_schema", f"a schema must be an object or a boolean, not {schema!r}")
        if "$ref" in schema:
            return self._ref(schema["$ref"], depth)
        body, paths = self._body(schema, name, depth)
        rule = self._add(name, body)
        if paths > 1:
            self._paths[rule] = paths
        return rule

    def _opened(self, symbol: Symbol | str) -> int:
        """The paths llama.cpp opens at once in a rule (at most: wherever in it that is)."""
        return self._paths.get(symbol.gbnf if isinstance(symbol, Symbol) else symbol, 1)

    def _body(self, schema: dict, name: str, depth: int) -> tuple[str, int]:
        """A rule's body, and the paths it opens at once."""
        kind = schema.get("type")
        self._check_keywords(schema, kind)
        if schema.get("nullable") is True:
            rest = self._visit({k: v for k, v in schema.items() if k != "nullable"}, name + "-value", depth + 1)
            return f"{rest} | {self._primitive('null')}", self._opened(rest) + 1
        if "const" in schema:
            return self._literal_value(schema["const"]), 1
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                raise UnsupportedSchema("enum", "must be a non-empty list")
            if len(values) > MAX_LITERALS:
                raise UnsupportedSchema("enum", f"has {len(values)} values; at most {MAX_LITERALS} are supported")
            choice, paths = prefix_tree((t,) for t in sorted({_json_text(v, "enum") for v in values}))
            if paths > MAX_ALTERNATIVES:
                raise UnsupportedSchema(
                    "enum", f"leaves {paths} values open at once (that many begin differently after their shared "
                    f"beginning); at most {MAX_ALTERNATIVES} are supported: fewer values, or values that share "
                    "their first characters")
            return f"({choice}) {self._primitive('space')}", paths
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self._union(key, schema[key], name, depth)
        if "allOf" in schema:
            return self._body(_merge_all_of(schema), name, depth)
        if isinstance(kind, list):
            if not kind:
                raise UnsupportedSchema("type", "must not be an empty list")
            if not all(isinstance(t, str) for t in kind):
                raise UnsupportedSchema("type", f"must be a type name or a list of them, not {kind!r}")
            # Each type once: every copy converted the whole schema again, and copies nested in copies
            # multiplied (["object"] * 30 four deep: 30^4 conversions).
            kind = list(dict.fromkeys(kind))
            shared = COMMON | ANNOTATIONS
            rules = [
                self._visit(
                    {k: v for k, v in schema.items() if k in shared or k in KEYWORDS.get(t, ())} | {"type": t},
                    f"{name}-{t}",
                    depth + 1,
                )
                for t in kind
            ]
            return " | ".join(rules), sum(map(self._opened, rules))
        if kind is None:
            kind = _implied_type(schema)
        if kind == "string":
            return self._string(schema), 1
        if kind == "integer":
            return self._integer(schema), 1
        if kind == "number":
            for key in ("maximum", "exclusiveMaximum", "exclusiveMinimum"):
                if key in schema:
                    raise UnsupportedSchema(key, "is not supported on a number (use an integer range)")
            if "minimum" not in schema:
                return self._primitive("number"), 1
            if schema["minimum"] != 0 or isinstance(schema["minimum"], bool):
                raise UnsupportedSchema("minimum", "on a number only 0 (no negative numbers) is supported")
            return self._primitive("unsigned-number"), 1
        if kind == "array":
            return self._array(schema, name, depth)
        if kind == "object":
            return self._object(schema, name, depth)
        if kind in ("boolean", "null"):
            return self._primitive(kind), 1
        if kind is None:
            return self._primitive("value"), 1
        raise UnsupportedSchema("type", f"unknown type {kind!r}")

    @staticmethod
    def _check_keywords(schema: dict, kind: Any) -> None:
        kinds = kind if isinstance(kind, list) else [kind] if kind else list(KEYWORDS)
        allowed = COMMON | ANNOTATIONS
        for k in kinds:
            allowed = allowed | KEYWORDS.get(k, set()) if isinstance(k, str) else allowed
        for key in schema:
            if key not in allowed:
                raise UnsupportedSchema(key, "is not supported in response_format schemas")
        if schema.get("uniqueItems") is True:
            raise UnsupportedSchema("uniqueItems", "cannot be enforced by a grammar")

    def _literal_value(self, value: Any) -> str:
        return f"{literal(_json_text(value, 'const'))} {self._primitive('space')}"

    def _space(self) -> Symbol:
        return Symbol(self._primitive("space"))

    def _literal_items(self, schema: Any) -> Spelling | None:
        """The text a const (or an enum of one value) allows, for a prefix tree to look into: unions are
        told apart by such tags (pydantic's Literal fields, a forced tool call's name). None otherwise."""
        if not isinstance(schema, dict) or "$ref" in schema or schema.get("nullable") is True:
            return None
        values = [schema["const"]] if "const" in schema else schema.get("enum")
        if not isinstance(values, list) or len(values) != 1:
            return None
        self._check_keywords(schema, schema.get("type"))
        return _json_text(values[0], "const" if "const" in schema else "enum"), self._space()

    def _union(self, key: str, options: Any, name: str, depth: int) -> str:
        """The alternatives as one prefix tree, so those that begin alike share llama.cpp's paths until
        their text differs; refused if more than MAX_ALTERNATIVES paths are still open at once."""
        if not isinstance(options, list) or not options:
            raise UnsupportedSchema(key, "must be a non-empty list of schemas")
        objects = sum(self._object_target(o) is not None for o in options) > 1
        alternatives: list[list[Spelling]] = []  # each once: a model's spellings are shared by its references
        seen: set[int] = set()  # ids of lists `alternatives` holds, so none is freed and its id reused
        for i, option in enumerate(options):
            self._tick()
            spellings = self._spellings(option, f"{name}-{i}", depth + 1, objects)
            if id(spellings) not in seen:
                seen.add(id(spellings))
                alternatives.append(spellings)
        gbnf, width = prefix_tree(itertools.chain.from_iterable(alternatives), self._opened)
        if width > MAX_ALTERNATIVES:
            # Each is a path llama.cpp checks the whole vocabulary against at each step: 256 alternatives
            # cost about 1.5 s a step with Gemma's 262k tokens, while every stream of the model waits.
            raise UnsupportedSchema(
                key, f"leaves {width} alternatives open at once; at most {MAX_ALTERNATIVES} are supported: make "
                "them differ early (a distinct first property, or a const tag as the first property)",
            )
        return gbnf, width

    def _spellings(self, option: Any, name: str, depth: int, objects: bool) -> list[Spelling]:
        """How a union's alternative is spelt for its prefix tree: a const's text; an object's members
        when `objects` (several alternatives are objects: all begin with "{"); else its rule."""
        text = self._literal_items(option)
        if text:
            return [text]
        target = self._object_target(option) if objects else None
        if target is None:
            return [(Symbol(self._visit(option, name, depth)),)]
        if "$ref" in option:
            return self._referred_spellings(option["$ref"], target, depth)
        self._check_keywords(option, option.get("type"))
        return self._object_spellings(option, name[-MAX_NAME:], depth)[0]

    def _referred_spellings(self, ref: str, target: dict, depth: int) -> list[Spelling]:
        """A referenced object's spellings, made once however many unions name it; a reference to one
        still being made (a recursive model) is to its rule."""
        key = id(target)
        if key not in self._ref_spellings:
            self._ref_spellings[key] = None
            self._check_keywords(target, target.get("type"))
            spellings, paths = self._object_spellings(target, ("ref-" + ref[1:])[-MAX_NAME:], depth + 1)
            self._ref_spellings[key], self._ref_paths[key] = spellings, paths
            if key in self._refs and not self._rules[self._refs[key]]:
                self._ref_rule(self._refs[key], key)  # its rule was named while these were being made
        return self._ref_spellings[key] or [(Symbol(self._ref(ref, depth)),)]

    def _ref_rule(self, name: str, key: int) -> None:
        """Rule `name` made of the spellings of the referenced object `key`, as _object would make it."""
        self._put(name, prefix_tree(self._ref_spellings[key])[0])
        if self._ref_paths[key] > 1:
            self._paths[name] = self._ref_paths[key]

    def _object_target(self, schema: Any) -> dict | None:
        """The object schema with members that `schema` is, or refers to; None for any other schema."""
        if isinstance(schema, dict) and "$ref" in schema:
            schema = self._resolve(schema["$ref"])
        return schema if _has_members(schema) else None

    def _resolve(self, ref: Any) -> Any:
        """The schema a local reference points at."""
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise UnsupportedSchema("$ref", f"only local references (#/...) are supported, not {ref!r}")
        target: Any = self._root
        for part in [p for p in ref[1:].split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                raise UnsupportedSchema("$ref", f"{ref!r} points at nothing in the schema")
            target = target[part]
        return target

    def _ref(self, ref: Any, depth: int) -> str:
        target = self._resolve(ref)
        key = id(target)
        if key in self._refs:
            return self._refs[key]
        name = self._add("ref-" + ref[1:], "")  # reserved first: a recursive schema refers to itself
        self._refs[key] = name
        if key in self._ref_spellings:
            # An object a union spells: its rule is made of those spellings, now or once they are made.
            # Visiting it again while they are being made nested each model of a recursive union twice
            # (10 models that hold lists of the union: "nests deeper than 64 levels", where 15 passed).
            if self._ref_spellings[key] is not None:
                self._ref_rule(name, key)
            return name
        rule = self._visit(target, name + "-def", depth + 1)
        self._put(name, rule)
        if self._opened(rule) > 1:
            self._paths[name] = self._opened(rule)
        return name

    def _count(self, schema: dict, key: str, default: int | None) -> int | None:
        value = schema.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UnsupportedSchema(key, f"must be a non-negative integer, not {value!r}")
        if value > MAX_COUNT:
            raise UnsupportedSchema(key, f"{value} is more than the {MAX_COUNT} supported")
        return value

    def _string(self, schema: dict) -> str:
        fmt = schema.get("format")
        if fmt in ("date", "time", "uuid"):
            return rf'"\"" {self._add(fmt, FORMATS[fmt])} "\"" {self._primitive("space")}'
        if fmt == "date-time":
            date = self._add("date", FORMATS["date"])
            time_ = self._add("time", FORMATS["time"])
            return rf'"\"" {date} "T" {time_} "\"" {self._primitive("space")}'
        low = self._count(schema, "minLength", 0) or 0
        high = self._count(schema, "maxLength", None)
        if high is not None and high < low:
            raise UnsupportedSchema("maxLength", f"{high} is less than minLength {low}")
        char = self._primitive("char")
        chars = self._repeat(char, low, high) if (low or high is not None) else f"{char}*"
        return rf'"\"" {chars} "\"" {self._primitive("space")}'

    def _integer(self, schema: dict) -> str:
        low, high = _int_bound(schema, "minimum", "exclusiveMinimum", 1), _int_bound(schema, "maximum", "exclusiveMaximum", -1)
        if low is None and high is None:
            return self._primitive("integer")
        if low is not None and high is not None and high < low:
            raise UnsupportedSchema("maximum", f"{high} is less than minimum {low}")
        unbounded = 10 ** MAX_INT_DIGITS - 1  # what the plain integer rule spells, at most
        return f"({integer_range(-unbounded if low is None else low, unbounded if high is None else high)}) " \
               f"{self._primitive('space')}"

    def _array(self, schema: dict, name: str, depth: int) -> str:
        space = self._primitive("space")
        tuple_items = schema.get("prefixItems", schema.get("items") if isinstance(schema.get("items"), list) else None)
        if tuple_items is not None:
            if not isinstance(tuple_items, list):
                raise UnsupportedSchema("prefixItems", "must be a list of schemas")
            parts = [self._visit(s, f"{name}-{i}", depth + 1) for i, s in enumerate(tuple_items)]
            body = f'"[" {space} ' + ' "," space '.join(parts) + f' "]" {space}'
            return body, max(map(self._opened, parts), default=1)
        item = self._visit(schema.get("items", True), f"{name}-item", depth + 1)
        low = self._count(schema, "minItems", 0) or 0
        high = self._count(schema, "maxItems", None)
        if high is not None and high < low:
            raise UnsupportedSchema("maxItems", f"{high} is less than minItems {low}")
        return f'"[" {space} {self._separated(item, low, high, name)} "]" {space}', self._opened(item)

    def _object(self, schema: dict, name: str, depth: int) -> tuple[str, int]:
        spellings, paths = self._object_spellings(schema, name, depth)
        return prefix_tree(spellings)[0], paths

    def _object_spellings(self, schema: dict, name: str, depth: int) -> tuple[list[Spelling], int]:
        """The object once per member that may come first (and empty, if every one is optional); and the
        most paths a member's value opens at once (the choice of members is bounded by MAX_OPTIONAL)."""
        space = self._space()
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            raise UnsupportedSchema("properties", "must be an object of schemas")
        required = schema.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise UnsupportedSchema("required", "must be a list of property names")
        missing = [r for r in required if r not in properties]
        if missing:
            raise UnsupportedSchema("required", f"names {missing[0]!r}, which is not in properties")
        required = set(required)  # looked up once per property: a long list must not make that quadratic
        if "properties" not in schema and "additionalProperties" not in schema:
            return [(Symbol(self._primitive("object")),)], 1
        extra = schema.get("additionalProperties", False)
        optional = sum(key not in required for key in properties) + (extra is not False)
        if optional > MAX_OPTIONAL:
            # llama.cpp's sampler tracks a path per member that may come next, and checks every token
            # of the vocabulary against each: 2400 of them cost 16 s a step with Gemma's 262k tokens.
            raise UnsupportedSchema(
                "required", f"leaves {optional} properties optional; at most {MAX_OPTIONAL} are supported: "
                "list the others in required",
            )
        members = [(key, self._member(key, sub, f"{name}-{key}", depth), key in required)
                   for key, sub in properties.items()]
        paths = max((self._opened(kv[-1]) for _, kv, _ in members), default=1)
        if extra is not False:
            value = self._visit({} if extra is True else extra, f"{name}-extra-value", depth + 1)
            kv = self._add(f"{name}-extra-kv", f'{self._other_key(properties, name)} ":" space {value}')
            members.append(("extra", (Symbol(self._add(f"{name}-extra-kvs", f'{kv} ("," space {kv})*')),), False))
            paths = max(paths, self._opened(value))
        return [("{", space, *start, "}", space) for start in self._member_starts(members, name)], paths

    def _other_key(self, keys: Iterable[str], name: str) -> str:
        """A member's key (a JSON string, then space) that is none of `keys`: an additional property named
        like a declared one is that one, and must match its schema ({"a": "x"} got through where "a" was
        an integer). A rule per point of the keys' prefix tree: at each, a character that leaves the
        tree (then any), one that follows it, or the end where no key ends. Until it leaves the tree the
        key is spelt without \\u escapes (each of which would have to be told apart from a key's
        character): a key with another control character, or DEL, that begins like a declared one
        cannot be written."""
        root: dict[str | None, Any] = {}
        for key in keys:
            node = root
            for ch in key:
                node = node.setdefault(ch, {})
            node[None] = True  # a key ends here
        if not root:
            return self._primitive("string")
        char = self._primitive("char")
        rules: dict[int, str] = {}
        stack: list[tuple[dict, bool]] = [(root, False)]
        while stack:  # children before parents, without recursion: a key may be thousands of characters
            node, ready = stack.pop()
            children = {ch: child for ch, child in node.items() if ch is not None}
            if not ready:
                stack.append((node, True))
                stack.extend((child, False) for child in children.values())
                continue
            self._tick()
            parts = []
            for ch, child in sorted(children.items()):
                ways = _key_char_spellings(ch)
                if ways:
                    way = ways[0] if len(ways) == 1 else f"({' | '.join(ways)})"
                    parts.append(f"{way} {rules[id(child)]}")
            # A rule per set of characters left out (one, mostly): every point would spell out its ranges.
            parts.append(f"{self._add(f'{name}-key-char', _key_char_other(set(children)))} {char}*" if children
                         else f"{char}+")
            body = " | ".join(parts)
            rules[id(node)] = self._add(f"{name}-other-key", f"({body})?" if None not in node else body)
        return self._add(f"{name}-other-key-str", f'"\\"" {rules[id(root)]} "\\"" {self._primitive("space")}')

    def _member(self, key: str, schema: Any, name: str, depth: int) -> Spelling:
        """A member's key and value; a const value as its text, which a union's prefix tree looks into."""
        value = self._literal_items(schema) or (Symbol(self._visit(schema, name, depth + 1)),)
        return json.dumps(key, ensure_ascii=False), self._space(), ":", self._space(), *value

    def _member_starts(self, members: list[tuple[str, Spelling, bool]], name: str) -> list[Spelling]:
        """(key, key-value, required) members in order, every required one, "," between those present,
        spelt once per member that may come first, and () if none need be. Linear, where spelling out
        each subset is quadratic: rule `key-rest` is the members from `key` on once one was written
        (each present one after a ","), so a spelling picks which member comes first, up to the first
        required one; past that the members are a fixed sequence."""
        if not members:
            return [()]
        space = self._space()
        items = [(",", space, *kv) if needed else (Symbol(f'("," space {_spell(kv)})?'),) for _, kv, needed in members]
        first = next((i for i, (_, _, needed) in enumerate(members) if needed), len(members) - 1)
        rest: Spelling = tuple(itertools.chain.from_iterable(items[first + 1:]))
        starts = [] if members[first][2] else [()]
        for i in range(first, -1, -1):
            starts.append(members[i][1] + rest)
            if i:
                rest = (Symbol(self._add(f"{name}-{members[i][0]}-rest", _spell(items[i] + rest))),)
        return starts[::-1]


_SHORT_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t"}


def _key_char_spellings(ch: str) -> list[str]:
    """GBNF for the ways the char rule spells `ch` in a JSON string, \\u escapes aside."""
    ways = []
    if ch not in '"\\' and ord(ch) >= 0x20 and ord(ch) != 0x7F:
        ways.append(literal(ch))
    if ch in _SHORT_ESCAPES:
        ways.append(literal("\\" + _SHORT_ESCAPES[ch]))
    return ways


def _key_char_other(excluded: set[str]) -> str:
    """GBNF for one character of a JSON string, as the char rule spells it but without \\u escapes, that is
    none of `excluded`. Positive ranges, not [^...]: llama.cpp lets a token that ends inside a
    multi-byte character through a negated class only if no character it may begin is in the class
    (excluding "é" would refuse "ü" split across tokens)."""
    out = {ord('"'), ord("\\"), 0x7F} | {ord(ch) for ch in excluded}
    ranges, low = [], 0x20
    for point in sorted(p for p in out if p >= 0x20):
        if point > low:
            ranges.append((low, point - 1))
        low = max(low, point + 1)
    if low <= 0x10FFFF:
        ranges.append((low, 0x10FFFF))
    ways = ["[" + "".join(f"\\U{a:08X}" if a == b else f"\\U{a:08X}-\\U{b:08X}" for a, b in ranges) + "]"]
    letters = [letter for ch, letter in _SHORT_ESCAPES.items() if ch not in excluded]
    if letters:
        ways.append('"\\\\" [' + "".join("\\" + letter if letter in '"\\' else letter for letter in letters) + "]")
    return f"({' | '.join(ways)})"


def _json_text(value: Any, keyword: str) -> str:
    """A const's or enum value's JSON text; NaN and infinities (json.loads reads NaN, Infinity, 1e999) have
    none: the grammar would let through text that is not JSON."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise UnsupportedSchema(keyword, f"{value!r} is not a JSON value") from None


def _has_members(schema: Any) -> bool:
    """Whether the converter spells `schema` as an object with members (as `_body` reads it)."""
    if not isinstance(schema, dict) or "$ref" in schema or schema.get("nullable") is True:
        return False
    if not {"const", "enum", "anyOf", "oneOf", "allOf"}.isdisjoint(schema):
        return False
    kind = schema.get("type")
    if kind is None:
        kind = _implied_type(schema)
    return kind == "object" and ("properties" in schema or "additionalProperties" in schema)


def _implied_type(schema: dict) -> str | None:
    for kind in ("string", "array", "object", "number"):
        if KEYWORDS[kind] & schema.keys():
            return kind
    return "number" if KEYWORDS["integer"] & schema.keys() else None


def integer_range(low: int, high: int) -> str:
    """GBNF for the integers from low to high (JSON's spelling: no leading zeros, no "-0"), digit by
    digit: a few alternatives per digit, where spelling the values out gave llama.cpp's sampler a path
    per value to check every token against (0..1000: over a second a masked step with Gemma)."""
    parts = []
    if low < 0:
        parts.append(f'"-" ({_natural_range(max(1, -high), -low)})')
    if high >= 0:
        parts.append(_natural_range(max(0, low), high))
    return " | ".join(parts)


def _natural_range(low: int, high: int) -> str:
    """The numbers from low to high (0 <= low <= high), grouped by their count of digits; whole groups
    (every n-digit number) merge into one repetition."""
    parts = []
    n = len(str(low))
    while n <= len(str(high)):
        first, last = (0 if n == 1 else 10 ** (n - 1)), 10 ** n - 1
        start, end = max(low, first), min(high, last)
        if n > 1 and start == first and end == last:
            m = n
            while m + 1 <= len(str(high)) and high >= 10 ** (m + 1) - 1:
                m += 1
            parts.append(f"[1-9] [0-9]{{{n - 1},{m - 1}}}" if m > n else f"[1-9] [0-9]{{{n - 1}}}")
            n = m + 1
            continue
        parts.append(_same_length_range(str(start), str(end)))
        n += 1
    return " | ".join(f"({p})" for p in parts) if len(parts) > 1 else parts[0]


def _same_length_range(a: str, b: str) -> str:
    """The digit strings of a's length from a to b (a <= b)."""
    if a == b:
        return f'"{a}"'
    if len(a) == 1:
        return f"[{a}-{b}]"
    if a[0] == b[0]:
        return f'"{a[0]}" ({_same_length_range(a[1:], b[1:])})'
    rest = len(a) - 1
    low_first, high_first = int(a[0]), int(b[0])
    parts = []
    if a[1:] != "0" * rest:  # a's first digit with only part of the rest
        parts.append(f'"{a[0]}" ({_same_length_range(a[1:], "9" * rest)})')
        low_first += 1
    tail = None
    if b[1:] != "9" * rest:
        tail = f'"{b[0]}" ({_same_length_range("0" * rest, b[1:])})'
        high_first -= 1
    if low_first <= high_first:
        digit = f'"{low_first}"' if low_first == high_first else f"[{low_first}-{high_first}]"
        parts.append(f"{digit} [0-9]{{{rest}}}")
    if tail is not None:
        parts.append(tail)
    return " | ".join(parts)


def _int_bound(schema: dict, inclusive: str, exclusive: str, step: int) -> int | None:
    """The least (step 1) or greatest (step -1) integer the bound allows."""
    for key, strict in ((inclusive, False), (exclusive, True)):
        if key in schema:
            value = schema[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UnsupportedSchema(key, f"must be a number, not {value!r}")
            if abs(value) > 10 ** 15:
                raise UnsupportedSchema(key, f"{value} is out of the supported range")
            if step > 0:
                return math.floor(value) + 1 if strict else math.ceil(value)
            return math.ceil(value) - 1 if strict else math.floor(value)
    return None


def _merge_all_of(schema: dict) -> dict:
    """allOf of object schemas: one object with every member's properties and required names."""
    parts = schema["allOf"]
    if not isinstance(parts, list) or not parts:
        raise UnsupportedSchema("allOf", "must be a non-empty list of schemas")
    merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
    for part in [{k: v for k, v in schema.items() if k != "allOf"}, *parts]:
        if not isinstance(part, dict) or not set(part) <= {"type", "properties", "required", *ANNOTATIONS}:
            raise UnsupportedSchema("allOf", "is supported only as a list of object schemas with properties")
        if part.get("type", "object") != "object":
            raise UnsupportedSchema("allOf", "is supported only for objects")
        merged["properties"].update(part.get("properties", {}))
        merged["required"].extend(part.get("required", []))
    return merged
