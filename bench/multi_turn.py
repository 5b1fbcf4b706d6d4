"""Multi-turn chats (issue 18): the TTFT of a chat's later turns, where a server can reuse the history.

`--chats` chats run at once, each `--turns` turns long: a fresh first question, then follow-ups. Each
answer (`--tokens` tokens, greedy, end of sequence ignored) is appended to the chat's transcript as
Gemma's chat template lays a conversation out, and the next turn sends the whole transcript to
/v1/completions: both systems get the same text, so neither's chat template is measured, and both may
serve the history from the KV cells of the chat's previous turn. Each round starts every system afresh
in turn. Reported, medians over rounds: TTFT p50 of first turns and of later turns, and output tok/s.

    python bench/multi_turn.py [--chats 4] [--turns 3] [--repeats 3] [--slots 8]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402
from serve_bench import Trace, fresh_prompt, interleaved, percentile, stream_completion  # noqa: E402

FOLLOW_UPS = ("Tell me more about that.", "Give one example.", "Now say it in one sentence.",
              "What would you add?", "Why does that matter?")
SYSTEMS = ("stack", "llama-server")


def next_turn(transcript: str, answer: str, question: str) -> str:
    """The transcript with the model's answer closed and the next user question opened."""
    return f"{transcript}{answer}<end_of_turn>\n<start_of_turn>user\n{question}<end_of_turn>\n<start_of_turn>model\n"


async def one_chat(client: httpx.AsyncClient, endpoint: peers.Endpoint, round_no: int, chat_no: int,
                   args) -> list[Trace]:
    transcript = fresh_prompt(round_no, -3, chat_no)
    traces: list[Trace] = []
    for turn in range(args.turns):
        trace = await stream_completion(client, endpoint, transcript, args.tokens)
        traces.append(trace)
        transcript = next_turn(transcript, trace.text, FOLLOW_UPS[(chat_no + turn) % len(FOLLOW_UPS)])
    return traces


async def one_round(endpoint: peers.Endpoint, round_no: int, args) -> dict[str, float]:
    limits = httpx.Limits(max_connections=args.chats)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:
        await stream_completion(client, endpoint, fresh_prompt(round_no, -4, 0), 8)  # warm up (loads the model)
        chats = await asyncio.gather(*(one_chat(client, endpoint, round_no, i, args) for i in range(args.chats)))
    first = [c[0].arrivals[0] - c[0].start for c in chats]
    later = [t.arrivals[0] - t.start for c in chats for t in c[1:]]
    traces = [t for c in chats for t in c]
    wall = max(t.end for t in traces) - min(t.start for t in traces)
    return {"first_ttft": percentile(first, 0.5), "later_ttft": percentile(later, 0.5),
            "tokens_per_s": sum(t.tokens for t in traces) / wall}


def run_system(name: str, model: Path, logs: Path, round_no: int, args) -> dict[str, float]:
    with peers.stack_or_llama_server(name, model, args.context, args.slots, logs) as endpoint:
        return asyncio.run(one_round(endpoint, round_no, args))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=4)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--context", type=int, default=8192)
    args = parser.parse_args(argv)
    model = peers.gemma_path()
    results = interleaved(SYSTEMS, args.repeats, lambda name, logs, n: run_system(name, model, logs, n, args))
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in results.items()}
    ours, peer = med["stack"], med["llama-server"]
    print(f"\n{args.chats} chats at once, {args.turns} turns of {args.tokens} tokens; {args.slots} slots, "
          f"context {args.context}; medians of {args.repeats} rounds\n")
    print("| | stack | llama-server | ratio |")
    print("|---|---|---|---|")
    for key, label in (("first_ttft", "first-turn TTFT p50 (ms)"), ("later_ttft", "later-turn TTFT p50 (ms)")):
        print(f"| {label} | {ours[key] * 1000:.0f} | {peer[key] * 1000:.0f} | {ours[key] / peer[key]:.2f} |")
    print(f"| output tok/s | {ours['tokens_per_s']:.1f} | {peer['tokens_per_s']:.1f} | "
          f"{ours['tokens_per_s'] / peer['tokens_per_s']:.2f} |")


if __name__ == "__main__":
    main()
