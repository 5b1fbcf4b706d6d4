"""Top-k over a Gemma-sized logits row (262,144 entries): `top_k_ids` against a full np.argpartition,
and the whole stochastic sample (services/runner/sampling.py) against llama.cpp's own sampler chain
(what llama-server runs: top-k, top-p, min-p, temperature, dist) over the row's candidate array; best
of --repeats timings of --number calls each, in ms per call. llama-server also fills that 262k-entry
array from the logits for every token (in C), which the chain's figure leaves out.

    python bench/topk_bench.py [--k 40] [--number 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import ctypes
import timeit
from collections.abc import Callable

import llama_cpp
import numpy as np

from modelrunner.runner.sampling import Sampler, SamplingOptions, top_k_ids

VOCAB = 262_144


def llama_cpp_chain(row: np.ndarray, k: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """(refill, refill and run the chain): llama.cpp's chain over a candidate array made from `row`,
    which the chain sorts and truncates, so each call refills it first."""
    n = len(row)
    data = (llama_cpp.llama_token_data * n)()
    fields = np.ctypeslib.as_array(ctypes.cast(data, ctypes.POINTER(ctypes.c_float)), shape=(n * 3,))
    ids, logits = fields.view(np.int32)[0::3], fields[1::3]
    ids[:] = np.arange(n, dtype=np.int32)
    candidates = llama_cpp.llama_token_data_array(data=data, size=n, selected=-1, sorted=False)
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    for sampler in (llama_cpp.llama_sampler_init_top_k(k), llama_cpp.llama_sampler_init_top_p(0.95, 1),
                    llama_cpp.llama_sampler_init_min_p(0.05, 1), llama_cpp.llama_sampler_init_temp(0.8),
                    llama_cpp.llama_sampler_init_dist(1)):
        llama_cpp.llama_sampler_chain_add(chain, sampler)

    def refill() -> None:
        logits[:] = row
        ids[:] = np.arange(n, dtype=np.int32)
        candidates.size, candidates.selected, candidates.sorted = n, -1, False

    def sample() -> None:
        refill()
        llama_cpp.llama_sampler_apply(chain, ctypes.byref(candidates))

    return refill, sample


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
    refill, chain = llama_cpp_chain(row, args.k)
    cases["refilling llama.cpp's candidate array (numpy)"] = refill
    cases["the same refill, then llama.cpp's chain"] = chain
    for name, call in cases.items():
        best = min(timeit.repeat(call, number=args.number, repeat=args.repeats)) / args.number
        print(f"{name}: {best * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
