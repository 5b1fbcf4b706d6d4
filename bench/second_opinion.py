"""A second opinion on serving (issue 18): GuideLLM, an independent client, drives our stack and
llama-server with the same fresh prompts, each started afresh as `bench/peers.py` starts them.

GuideLLM (vLLM's benchmark client, PyPI `guidellm`) is not a project dependency: it brings torch
(about 6 GB). Install it in a venv of its own and name its executable with --guidellm. It runs offline
here without a tokenizer: token counts come from the servers' `usage`. Each request is a fresh prompt
(bench/serve_bench.py's fresh_prompt, without the chat markup: GuideLLM sends /v1/chat/completions,
so each server applies the model's chat template) with exactly --tokens tokens out (GuideLLM sends
`max_tokens` and `ignore_eos`). Per system and concurrency: output tok/s (tokens over the benchmark's
duration) and TTFT p50 as GuideLLM measures them, medians over rounds; one request warms each
system up first.

    python3 -m venv /tmp/gl && /tmp/gl/bin/pip install guidellm
    python bench/second_opinion.py --guidellm /tmp/gl/bin/guidellm [--concurrency 4,8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402
from batch_limit import PROMPTS  # noqa: E402
from serve_bench import _WORDS, fresh_prompt, log_dir, stream_completion  # noqa: E402

SYSTEMS = ("stack", "llama-server")


def write_prompts(path: Path, round_no: int, count: int, tokens: int) -> None:
    with path.open("w") as out:
        for i in range(count):
            rng = random.Random(f"guidellm/{round_no}/{i}")
            words = " ".join(rng.choice(_WORDS) for _ in range(12))
            prompt = f"Keep these words in mind: {words}. {PROMPTS[i % len(PROMPTS)]}"
            out.write(json.dumps({"prompt": prompt, "output_tokens_count": tokens}) + "\n")


async def warm_up(endpoint: peers.Endpoint) -> None:
    """One request first, as bench/serve_bench.py does: the stack loads a model on its first request,
    llama-server at its start, and neither load belongs in the first cell."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0)) as client:
        await stream_completion(client, endpoint, fresh_prompt(-1, -1, 0), 8)


def guidellm(executable: str, endpoint: peers.Endpoint, prompts: Path, streams: int, requests: int,
             output: Path) -> dict[str, float]:
    command = [executable, "run",
               "--backend", f"kind=openai_http,target={endpoint.url},model={endpoint.model}",
               "--profile", f"kind=concurrent,streams={streams}",
               "--constraint", f"kind=max_requests,count={requests}",
               "--data", f"kind=json_file,path={prompts}",
               "--disable-console", "--output", f"kind=json,path={output}"]
    subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL)
    benchmark = json.loads(output.read_text())["benchmarks"][0]
    metrics = benchmark["metrics"]
    if metrics["request_totals"]["errored"]:
        raise RuntimeError(f"{endpoint.name}: {metrics['request_totals']['errored']} requests failed")
    tokens = metrics["output_token_count"]["successful"]["total_sum"]
    return {"tokens_per_s": tokens / benchmark["duration"],
            "ttft_p50": metrics["time_to_first_token_ms"]["successful"]["median"] / 1000}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guidellm", required=True, help="the guidellm executable")
    parser.add_argument("--concurrency", default="4,8")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--context", type=int, default=8192)
    args = parser.parse_args(argv)
    levels = [int(n) for n in args.concurrency.split(",")]
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    model = peers.gemma_path()
    with log_dir() as logs, tempfile.TemporaryDirectory(prefix="guidellm-") as work:
        for round_no in range(args.repeats):
            for name in SYSTEMS:
                with peers.stack_or_llama_server(name, model, args.context, args.slots, logs) as endpoint:
                    asyncio.run(warm_up(endpoint))
                    for n in levels:
                        prompts = Path(work) / f"{round_no}-{name}-{n}.jsonl"
                        write_prompts(prompts, round_no * 100 + n, 2 * n, args.tokens)
                        cell = guidellm(args.guidellm, endpoint, prompts, n, 2 * n, Path(work) / "out.json")
                        results.setdefault((name, n), []).append(cell)
                        print(name, n, {k: round(v, 3) for k, v in cell.items()}, flush=True)
    print(f"\nGuideLLM, fresh prompts, {args.tokens} tokens out; {args.slots} slots, context {args.context}; "
          f"medians of {args.repeats} rounds\n")
    print("| N | stack tok/s | llama-server tok/s | ratio | stack TTFT p50 | llama-server TTFT p50 | ratio |")
    print("|---|---|---|---|---|---|---|")
    for n in levels:
        ours, peer = ({k: statistics.median(c[k] for c in results[(s, n)]) for k in ("tokens_per_s", "ttft_p50")}
                      for s in SYSTEMS)
        print(f"| {n} | {ours['tokens_per_s']:.1f} | {peer['tokens_per_s']:.1f} | "
              f"{ours['tokens_per_s'] / peer['tokens_per_s']:.2f} | {ours['ttft_p50'] * 1000:.0f} ms | "
              f"{peer['ttft_p50'] * 1000:.0f} ms | {ours['ttft_p50'] / peer['ttft_p50']:.2f} |")


if __name__ == "__main__":
    main()
