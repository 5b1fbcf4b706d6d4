"""Top-k over a Gemma-sized logits row (262,144 entries): `top_k_ids` against a full np.argpartition,
and the whole stochastic sample (services/runner/sampling.py); best of --repeats timings of --number
calls each, in ms per call.

    python bench/topk_bench.py [--k 40] [--number 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import timeit

import numpy as np

from modelrunner.runner.sampling import Sampler, SamplingOptions, top_k_ids

VOCAB = 262_144


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=40)
    parser.add_argument("--number", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    row = (rng.standard_normal(VOCAB) * 3).astype(np.float32)
    row[rng.integers(0, VOCAB, 5)] += 15  # a few likely tokens, as a trained model's rows have
    assert np.array_equal(np.sort(row[top_k_ids(row, args.k)]), np.sort(row[np.argpartition(row, -args.k)[-args.k:]]))
    sampler = Sampler(SamplingOptions(top_k=args.k, seed=1), VOCAB)
    cases = {
        "np.argpartition (before)": lambda: np.argpartition(row, -args.k)[-args.k:],
        "top_k_ids": lambda: top_k_ids(row, args.k),
        "whole sample (temperature 0.8, top-k/top-p/min-p)": lambda: sampler.sample(row),
    }
    for name, call in cases.items():
        best = min(timeit.repeat(call, number=args.number, repeat=args.repeats)) / args.number
        print(f"{name}: {best * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
