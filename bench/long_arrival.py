"""A long prompt arriving while other streams decode (issue 18): what the running streams feel.

Each round starts every system afresh in turn: `--streams` streams (fresh ~40-token prompts, 256
tokens out) decode; once each has its first token, one fresh prompt of about `--long-tokens` tokens
arrives (16 tokens out). Reported, medians over rounds: the running streams' inter-token gaps while the
long prompt is prefilled (from its send to its first token: p50, p99, max), their p99 over the whole of
their streams (what a user of one of them sees), and the long prompt's TTFT.
Systems: `stack-fF-bB` (our stack, --runner-prefill-step-factor F, 0 being no budget, llama-server's way,
and --runner-batch-size B, the tokens one step may carry) and `llama-server`, the same slots and context.

    python bench/long_arrival.py [--factors 0,4] [--batches 512,2048] [--repeats 3] [--streams 7] [--long-tokens 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402
from serve_bench import _WORDS, fresh_prompt, interleaved, percentile, stream_completion  # noqa: E402


def long_prompt(round_no: int, tokens: int) -> str:
    """About `tokens` tokens (a word and a space are about one token each for Gemma), never seen before."""
    rng = random.Random(f"long/{round_no}")
    return fresh_prompt(round_no, -1, 0).replace("Keep these words in mind:",
                                                 "Keep these words in mind: " + " ".join(rng.choice(_WORDS) for _ in range(tokens)))


async def one_round(endpoint: peers.Endpoint, round_no: int, args) -> dict[str, float]:
    limits = httpx.Limits(max_connections=args.streams + 1)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:
        await stream_completion(client, endpoint, fresh_prompt(round_no, -2, 0), 8)  # warm up (loads the model)
        first = [asyncio.Event() for _ in range(args.streams)]

        async def running(i: int):
            trace = await stream_completion(client, endpoint, fresh_prompt(round_no, args.streams, i), 256,
                                            on_token=first[i].set)
            return trace

        streams = [asyncio.create_task(running(i)) for i in range(args.streams)]
        await asyncio.gather(*(e.wait() for e in first))
        long = await stream_completion(client, endpoint, long_prompt(round_no, args.long_tokens), 16)
        traces = await asyncio.gather(*streams)
    window = (long.start, long.arrivals[0])
    pairs = [(a, b) for t in traces for a, b in zip(t.arrivals, t.arrivals[1:])]  # successive tokens
    gaps = [b - a for a, b in pairs if b > window[0] and a < window[1]]
    every_gap = [b - a for a, b in pairs]
    return {"itl_p50": percentile(gaps, 0.5), "itl_p99": percentile(gaps, 0.99), "max_gap": max(gaps),
            "stream_p99": percentile(every_gap, 0.99), "long_ttft": window[1] - window[0]}


def run_system(name: str, model: Path, logs: Path, round_no: int, args) -> dict[str, float]:
    if name != "llama-server":
        factor, batch = name.removeprefix("stack-f").split("-b")
        os.environ["MODELRUNNER_RUNNER_PREFILL_STEP_FACTOR"] = factor
        os.environ["MODELRUNNER_RUNNER_BATCH_SIZE"] = batch
    with peers.stack_or_llama_server(name, model, args.context, args.slots, logs) as endpoint:
        return asyncio.run(one_round(endpoint, round_no, args))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", default="0,4")
    parser.add_argument("--batches", default="512,2048")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--streams", type=int, default=7)
    parser.add_argument("--long-tokens", type=int, default=2000)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--context", type=int, default=8192)
    args = parser.parse_args(argv)
    systems = [f"stack-f{f}-b{b}" for f in args.factors.split(",") for b in args.batches.split(",")]
    systems.append("llama-server")
    model = peers.gemma_path()
    results = interleaved(systems, args.repeats, lambda name, logs, n: run_system(name, model, logs, n, args))
    peer = {k: statistics.median(r[k] for r in results["llama-server"]) for k in results["llama-server"][0]}
    print(f"\n{args.streams} streams decoding, one ~{args.long_tokens}-token prompt arrives; {args.slots} slots, "
          f"context {args.context}; medians of {args.repeats} rounds; ms (ratio to llama-server)\n")
    print("| system | running ITL p50 | running ITL p99 | max gap | whole-stream ITL p99 | long prompt TTFT |")
    print("|---|---|---|---|---|---|")
    for name in systems:
        med = {k: statistics.median(r[k] for r in results[name]) for k in peer}
        cells = [f"{med[k] * 1000:.0f} ({med[k] / peer[k]:.2f}x)" for k in ("itl_p50", "itl_p99", "max_gap", "stream_p99", "long_ttft")]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
