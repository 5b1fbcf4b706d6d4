"""What one masked sampling step costs with an integer range, an enum or a union of objects (issue 15):
llama.cpp's grammar checks every token of Gemma's 262k vocabulary against each path the grammar has
open, so values spelt out as one alternative each (0..1000: 1001 paths) cost far more than the same
range digit by digit (json_schema_gbnf.integer_range), or the same enum as a prefix tree
(literal_choice), unless its values begin with as many different characters. A union (anyOf/oneOf) of object schemas is timed at every step of an answer, the
worst step reported: spelt as one rule per alternative (every one a path until the answer's text
tells them apart), and as the schema converter writes it (schema_to_gbnf). Alternates the ways.

    PYTHONPATH=. .venv/bin/python bench/grammar_mask_cost.py [--high 1000] [--enum 1024] [--unions 8,64,256]
        [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np

from modelrunner.runner.backends.base import LoadedModel, LoadOptions
from modelrunner.runner.backends.llamacpp import LlamaCppBackend
from modelrunner.runner.json_schema_gbnf import PRIMITIVES, integer_range, literal, literal_choice, schema_to_gbnf
from tests.support.models import gemma_gguf_path


def random_words(n: int, seed: int) -> list[str]:
    """n distinct random lowercase words, 3 to 12 letters."""
    rng = random.Random(seed)
    words: dict[str, None] = {}
    while len(words) < n:
        words["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 12)))] = None
    return list(words)


def one_rule_each(bodies: list[str]) -> str:
    """GBNF with one rule per alternative body, as the converter spelt a union before."""
    rules = [f"a{i} ::= {body}" for i, body in enumerate(bodies)]
    primitives = [f"{name} ::= {body}" for name, body in PRIMITIVES.items()]
    return "\n".join(["root ::= " + " | ".join(f"a{i}" for i in range(len(bodies))), *rules, *primitives]) + "\n"


def union_cases(n: int) -> dict[str, tuple[str, str]]:
    """name -> (GBNF, an answer it allows) for unions of n object schemas."""
    keys = random_words(n, 1)
    tags = random_words(n, 2)
    distinct = {"anyOf": [{"type": "object", "properties": {k: {"type": "string"}}, "required": [k]} for k in keys]}
    # As pydantic writes a discriminated union: references to models whose first field is a Literal tag.
    models = {f"M{i}": {"title": f"M{i}", "type": "object",
                        "properties": {"kind": {"const": t, "title": "Kind", "type": "string"},
                                       "value": {"title": "Value", "type": "integer"}},
                        "required": ["kind", "value"]} for i, t in enumerate(tags)}
    tagged = {"oneOf": [{"$ref": f"#/$defs/{m}"} for m in models], "$defs": models}
    tag_second = {"oneOf": [{"type": "object", "properties": {"name": {"type": "string"}, "kind": {"const": t}},
                             "required": ["name", "kind"]} for t in tags]}
    return {
        f"anyOf of {n} objects with distinct keys, one rule each": (
            one_rule_each([f'"{{" space {literal(json.dumps(k))} space ":" space string "}}" space' for k in keys]),
            json.dumps({keys[-1]: "x"})),
        f"anyOf of {n} objects with distinct keys": (schema_to_gbnf(json.dumps(distinct)), json.dumps({keys[-1]: "x"})),
        f"oneOf of {n} tagged models, one rule each": (
            one_rule_each([f'"{{" space "\\"kind\\"" space ":" space {literal(json.dumps(t))} space "," space '
                           f'"\\"value\\"" space ":" space integer "}}" space' for t in tags]),
            json.dumps({"kind": tags[-1], "value": 12})),
        f"oneOf of {n} tagged models": (
            schema_to_gbnf(json.dumps(tagged)), json.dumps({"kind": tags[-1], "value": 12})),
        f"oneOf of {n} objects tagged second": (
            schema_to_gbnf(json.dumps(tag_second)), json.dumps({"name": "ab", "kind": tags[-1]})),
    }


def masked_steps(model: LoadedModel, gbnf: str, answer: str, row: np.ndarray) -> list[float]:
    """Seconds of each masked step while the grammar follows `answer`'s tokens."""
    grammar = model.grammar(gbnf)
    try:
        steps = []
        for token in model.tokenize(answer, add_special=False, parse_special=False):
            started = time.perf_counter()
            grammar.apply(row.copy())
            steps.append(time.perf_counter() - started)
            assert grammar.allows(token), f"the grammar refuses {answer!r}"
            grammar.accept(token)
        return steps
    finally:
        grammar.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--high", type=int, default=1000)
    parser.add_argument("--enum", type=int, default=1024, help="enum values: random lowercase words")
    parser.add_argument("--unions", default="8,64,256", help="alternatives in each union, comma-separated")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    model = LlamaCppBackend().load([str(gemma_gguf_path())], LoadOptions(context_size=256, parallel=1, threads=1))
    words = [json.dumps(w) for w in random_words(args.enum, 0)]
    grammars = {
        f"0..{args.high} spelt out": "root ::= " + " | ".join(f'"{v}"' for v in range(args.high + 1)) + "\n",
        f"0..{args.high} digit by digit": f"root ::= {integer_range(0, args.high)}\n",
        f"enum of {len(words)} spelt out": "root ::= " + " | ".join(literal(w) for w in sorted(words)) + "\n",
        f"enum of {len(words)} as a prefix tree": f"root ::= {literal_choice(words)}\n",
    }
    unions = {name: case for n in map(int, args.unions.split(",")) for name, case in union_cases(n).items()}
    # Values that begin with as many different characters: past the quote, one path each (now refused).
    apart = [json.dumps(chr(0x4E00 + i) + "xyz", ensure_ascii=False) for i in range(args.enum)]
    unions[f"enum of {len(apart)} with as many first characters, as a prefix tree"] = (
        f"root ::= {literal_choice(apart)}\n", apart[-1])
    row = np.random.default_rng(0).standard_normal(model.facts.vocab_size).astype(np.float32)
    try:
        for _ in range(args.rounds):
            for name, gbnf in grammars.items():
                grammar = model.grammar(gbnf)
                started = time.perf_counter()
                grammar.apply(row.copy())
                print(f"{name}: masked step {(time.perf_counter() - started) * 1000:.1f} ms", flush=True)
                grammar.close()
            for name, (gbnf, answer) in unions.items():
                steps = masked_steps(model, gbnf, answer, row)
                print(f"{name}: first step {steps[0] * 1000:.1f} ms, worst of {len(steps)} "
                      f"{max(steps) * 1000:.1f} ms, all {sum(steps) * 1000:.1f} ms", flush=True)
    finally:
        model.close()


if __name__ == "__main__":
    main()
