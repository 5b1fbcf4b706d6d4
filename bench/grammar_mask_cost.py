"""What one masked sampling step costs with an integer range or an enum (issue 15): llama.cpp's
grammar checks every token of Gemma's 262k vocabulary against each path the grammar has open, so
values spelt out as one alternative each (0..1000: 1001 paths) cost far more than the same range
digit by digit (json_schema_gbnf.integer_range), or the same enum as a prefix tree (literal_choice).
Alternates the ways, one masked step each.

    PYTHONPATH=. .venv/bin/python bench/grammar_mask_cost.py [--high 1000] [--enum 1024] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np

from modelrunner.runner.backends.base import LoadOptions
from modelrunner.runner.backends.llamacpp import LlamaCppBackend
from modelrunner.runner.json_schema_gbnf import integer_range, literal, literal_choice
from tests.support.models import gemma_gguf_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--high", type=int, default=1000)
    parser.add_argument("--enum", type=int, default=1024, help="enum values: random lowercase words")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    model = LlamaCppBackend().load([str(gemma_gguf_path())], LoadOptions(context_size=256, parallel=1, threads=1))
    rng = random.Random(0)
    words = {json.dumps("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 12))))
             for _ in range(args.enum)}
    grammars = {
        f"0..{args.high} spelt out": "root ::= " + " | ".join(f'"{v}"' for v in range(args.high + 1)) + "\n",
        f"0..{args.high} digit by digit": f"root ::= {integer_range(0, args.high)}\n",
        f"enum of {len(words)} spelt out": "root ::= " + " | ".join(literal(w) for w in sorted(words)) + "\n",
        f"enum of {len(words)} as a prefix tree": f"root ::= {literal_choice(words)}\n",
    }
    row = np.random.default_rng(0).standard_normal(model.facts.vocab_size).astype(np.float32)
    try:
        for _ in range(args.rounds):
            for name, gbnf in grammars.items():
                grammar = model.grammar(gbnf)
                started = time.perf_counter()
                grammar.apply(row.copy())
                print(f"{name}: masked step {(time.perf_counter() - started) * 1000:.1f} ms")
                grammar.close()
    finally:
        model.close()


if __name__ == "__main__":
    main()
