"""What one masked sampling step costs with an integer-range grammar (issue 15): llama.cpp's grammar
checks every token of Gemma's 262k vocabulary against each path the grammar has open, so a range
spelt out as one alternative per value (0..1000: 1001 paths) costs far more than the same range
digit by digit (json_schema_gbnf.integer_range). Alternates the two, one masked step each.

    PYTHONPATH=. .venv/bin/python bench/grammar_mask_cost.py [--high 1000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from modelrunner.runner.backends.base import LoadOptions
from modelrunner.runner.backends.llamacpp import LlamaCppBackend
from modelrunner.runner.json_schema_gbnf import integer_range
from tests.support.models import gemma_gguf_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--high", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    model = LlamaCppBackend().load([str(gemma_gguf_path())], LoadOptions(context_size=256, parallel=1, threads=1))
    grammars = {
        "spelt out": "root ::= (" + " | ".join(f'"{v}"' for v in range(args.high + 1)) + ")\n",
        "digit by digit": f"root ::= ({integer_range(0, args.high)})\n",
    }
    row = np.random.default_rng(0).standard_normal(model.facts.vocab_size).astype(np.float32)
    try:
        for _ in range(args.rounds):
            for name, gbnf in grammars.items():
                grammar = model.grammar(gbnf)
                started = time.perf_counter()
                grammar.apply(row.copy())
                print(f"0..{args.high} {name}: masked step {(time.perf_counter() - started) * 1000:.1f} ms")
                grammar.close()
    finally:
        model.close()


if __name__ == "__main__":
    main()
