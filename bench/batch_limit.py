"""The in-process limit of batched greedy decoding, and how close the Runner's scheduler gets to it.

For N concurrent sequences (8 short prompts, 128 tokens each, end of sequence ignored) it measures
aggregate output tokens/s of (a) a bare loop over llama-cpp-python's low-level API (one llama_decode
per step for all sequences, numpy argmax, unified KV cache) and (b) the Runner's backend + scheduler,
interleaved in one process so both see the same machine. It also times every llama_decode call and
reports the median time between the end of one and the start of the next (each loop's own work per
step: sampling, batch building, delivery).

    python bench/batch_limit.py [--model PATH] [--n 1,4,8,16] [--tokens 128] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
from pathlib import Path

import llama_cpp
import numpy as np

from modelrunner.runner.backends.base import LoadOptions
from modelrunner.runner.backends.llamacpp import LlamaCppBackend, usable_cores
from modelrunner.runner.sampling import SamplingOptions
from modelrunner.runner.scheduler import Job, Scheduler
from peers import gemma_path

PROMPTS = [
    "Write a short poem about the sea.",
    "Explain what a compiler does.",
    "List three uses of copper.",
    "Describe a sunrise in the mountains.",
    "What is the capital of France and why is it famous?",
    "Tell me a story about a robot who learns to paint.",
    "How do bees make honey?",
    "Give advice to a new programmer.",
]
CONTEXT = 8192


def chat(prompt: str) -> str:
    return f"<start_of_turn>user\n{prompt}<end_of_turn>\n<start_of_turn>model\n"


class BareLoop:
    """The reference: the leanest Python loop over the low-level API."""

    def __init__(self, path: Path, slots: int) -> None:
        params = llama_cpp.llama_model_default_params()
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx, cparams.n_batch, cparams.n_ubatch = CONTEXT, 512, 512
        cparams.n_seq_max, cparams.n_outputs_max = slots, slots
        cparams.kv_unified, cparams.swa_full, cparams.no_perf = True, False, True
        cparams.n_threads = cparams.n_threads_batch = usable_cores()
        self.ctx = llama_cpp.llama_init_from_model(self.model, cparams)
        self.mem = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(512, 0, 1)

    def tokenize(self, text: str) -> list[int]:
        data = text.encode()
        buf = (llama_cpp.llama_token * (len(data) + 8))()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, len(buf), True, True)
        return list(buf[:n])

    def run(self, prompts: list[list[int]], tokens: int) -> tuple[int, float]:
        llama_cpp.llama_memory_clear(self.mem, True)
        b = self.batch
        start = time.perf_counter()
        n, last_index = 0, []
        for seq, prompt in enumerate(prompts):
            for pos, tok in enumerate(prompt):
                b.token[n], b.pos[n], b.n_seq_id[n], b.seq_id[n][0] = tok, pos, 1, seq
                b.logits[n] = pos == len(prompt) - 1
                n += 1
            last_index.append(n - 1)
        b.n_tokens = n
        assert llama_cpp.llama_decode(self.ctx, b) == 0
        positions = [len(p) for p in prompts]
        produced = 0
        for _ in range(tokens):
            next_tokens = []
            for i in last_index:
                row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,))
                next_tokens.append(int(np.argmax(row)))
            produced += len(next_tokens)
            for i, tok in enumerate(next_tokens):
                b.token[i], b.pos[i], b.n_seq_id[i], b.seq_id[i][0], b.logits[i] = tok, positions[i], 1, i, 1
                positions[i] += 1
            b.n_tokens = len(next_tokens)
            last_index = list(range(len(next_tokens)))
            if _ < tokens - 1:
                assert llama_cpp.llama_decode(self.ctx, b) == 0
        return produced, time.perf_counter() - start


async def run_scheduler(scheduler: Scheduler, prompts: list[list[int]], tokens: int) -> tuple[int, float]:
    async def one(prompt: list[int]) -> int:
        job = Job(prompt=prompt, sampling=SamplingOptions(temperature=0), max_tokens=tokens, ignore_eos=True)
        count = 0
        async for chunk in scheduler.submit(job):
            count = chunk.completion_tokens or count
        return count

    start = time.perf_counter()
    counts = await asyncio.gather(*[one(p) for p in prompts])
    return sum(counts), time.perf_counter() - start


class StepClock:
    """Wraps llama_cpp.llama_decode (both loops call it through the module) to time the gaps between steps."""

    def __init__(self) -> None:
        self.steps: list[tuple[float, float]] = []  # (start, seconds)
        decode = llama_cpp.llama_decode

        def timed(ctx, batch):
            started = time.perf_counter()
            try:
                return decode(ctx, batch)
            finally:
                self.steps.append((started, time.perf_counter() - started))

        llama_cpp.llama_decode = timed

    def gap_ms(self) -> float:
        """The median time between two steps of the last run (its prefill and first steps left out)."""
        steps, self.steps = self.steps[3:], []
        gaps = [b[0] - a[0] - a[1] for a, b in zip(steps, steps[1:])]
        return statistics.median(gaps) * 1000 if gaps else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--n", default="1,4,8,16")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    path = args.model or gemma_path()
    sizes = [int(x) for x in args.n.split(",")]
    slots = max(sizes)
    bare = BareLoop(path, slots)
    loaded = LlamaCppBackend().load([str(path)], LoadOptions(context_size=CONTEXT, parallel=slots))
    prompts = [bare.tokenize(chat(p)) for p in PROMPTS]
    clock = StepClock()

    async def measure() -> None:
        scheduler = Scheduler(loaded, name="bench", max_queue=1024)
        try:
            warm = prompts[:min(2, slots)]
            await run_scheduler(scheduler, warm, 8)  # warm up both paths
            bare.run(warm, 8)
            clock.gap_ms()
            print(f"{'N':>3} {'bare tok/s':>11} {'scheduler tok/s':>16} {'ratio':>6} {'gap ms bare/scheduler':>22}")
            for n in sizes:
                batch = [prompts[i % len(prompts)] for i in range(n)]
                bare_rates, sched_rates, bare_gaps, sched_gaps = [], [], [], []
                for _ in range(args.repeat):
                    produced, seconds = bare.run(batch, args.tokens)
                    bare_rates.append(produced / seconds)
                    bare_gaps.append(clock.gap_ms())
                    produced, seconds = await run_scheduler(scheduler, batch, args.tokens)
                    sched_rates.append(produced / seconds)
                    sched_gaps.append(clock.gap_ms())
                b, s = statistics.median(bare_rates), statistics.median(sched_rates)
                gaps = f"{statistics.median(bare_gaps):.3f} / {statistics.median(sched_gaps):.3f}"
                print(f"{n:>3} {b:>11.1f} {s:>16.1f} {s / b:>6.2f} {gaps:>22}", flush=True)
        finally:
            scheduler.close()

    asyncio.run(measure())


if __name__ == "__main__":
    main()
