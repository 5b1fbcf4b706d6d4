"""Whole-stack serving benchmark (issue 10): our gateway + Runner against llama.cpp's servers.

Every HTTP system is driven by the same httpx async streaming client against /v1/completions with
the same model (Gemma 3 270M Q4_K_M), the same 8 chat-formatted prompts and greedy decoding with the
end of sequence ignored, so every request yields exactly `--tokens` tokens; each system runs alone
(the machine has 2 cores). Systems:

  stack             our stack via its launcher, through the gateway, Runner with --slots slots (8)
  stack-no-cache    the same with the Runner's prompt cache off (the grid repeats its 8 prompts, which
                    the cache serves from the slots' KV cells; llama-server's own cache does not reuse
                    them for Gemma 3, a sliding-window model)
  inprocess    (a)  llama_cpp.Llama (high-level API, stream=True), one request after another
  llama-cpp-server (b)  `python -m llama_cpp.server`, interrupt_requests off
  limit        (c)  batched greedy decoding of N sequences over the low-level API, no server
  llama-server (d)  llama.cpp's C++ server, the same slots, unified KV cache, flash attention on/off (faster)

A cell (system x concurrency N) sends max(N, --min-requests) requests, N in flight at a time, and
reports aggregate output tokens/s, TTFT p50/p95 and inter-token latency p50; each of --repeats rounds
starts every system afresh in turn (so load from elsewhere on the machine hits all of them alike), and
the table shows medians over rounds and the highest peak RSS (VmHWM) of each server process.

    python bench/serve_bench.py [--systems stack,llama-server] [--concurrency 1,4,8,16] [--repeats 3]
                                [--fresh] [--slots 8] [--peer-slots 4] [--sampling greedy|sampled]

--fresh gives every request a prompt no earlier one began with (bench/RESULTS.md: the repeated grid
measures the prompt cache from its second cell on, not serving).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (a sibling module: bench/ is not a package)
from batch_limit import PROMPTS, BareLoop, chat  # noqa: E402

SYSTEMS = ("stack", "stack-no-cache", "inprocess", "llama-cpp-server", "limit", "llama-server")
LABELS = {"inprocess": "(a) in-process llama-cpp-python", "llama-cpp-server": "(b) llama_cpp.server",
          "limit": "(c) low-level batched loop", "llama-server": "(d) llama-server", "stack": "modelrunner stack",
          "stack-no-cache": "modelrunner stack, prompt cache off"}
OURS = ("stack", "stack-no-cache")
DEFAULT_SLOTS = 8
RESULTS = Path(__file__).resolve().parent / "results" / "serve_bench.md"


@dataclass
class Trace:
    """One request as the client saw it: when it was sent, when each token event arrived."""

    start: float
    arrivals: list[float]
    tokens: int  # the server's usage count when it reports one, else the token events seen
    text: str = ""  # what was generated (a multi-turn chat appends it to its transcript)

    @property
    def end(self) -> float:
        return self.arrivals[-1] if self.arrivals else self.start


@dataclass
class Cell:
    """The figures of one system at one concurrency (medians over repetitions)."""

    tokens_per_s: float
    ttft_p50: float | None = None
    ttft_p95: float | None = None
    itl_p50: float | None = None


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile; enough for a few dozen samples without numpy."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summarise(traces: list[Trace]) -> Cell:
    wall = max(t.end for t in traces) - min(t.start for t in traces)
    ttfts = [t.arrivals[0] - t.start for t in traces if t.arrivals]
    gaps = [b - a for t in traces for a, b in zip(t.arrivals, t.arrivals[1:])]
    return Cell(sum(t.tokens for t in traces) / wall, percentile(ttfts, 0.5), percentile(ttfts, 0.95),
                percentile(gaps, 0.5) if gaps else None)


def median_cell(cells: list[Cell]) -> Cell:
    def med(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    return Cell(statistics.median(c.tokens_per_s for c in cells), med([c.ttft_p50 for c in cells]),
                med([c.ttft_p95 for c in cells]), med([c.itl_p50 for c in cells]))


# --- the one HTTP client -------------------------------------------------------------------------

class Unavailable(RuntimeError):
    """HTTP 503: the system was transiently unable to answer; the cell is worth one retry."""


# What `--sampling` sends. repeat_penalty 1: llama-server's default, where the stack's default for a base
# model is 1.2. "sampled": llama-server's default sampler chain, spelled out so both systems do the same
# work (top-k over the whole vocabulary, then top-p and min-p), as a user who leaves sampling alone gets.
SAMPLING = {
    "greedy": {"temperature": 0, "repeat_penalty": 1.0},
    "sampled": {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0, "seed": 1},
}


async def stream_completion(client: httpx.AsyncClient, endpoint: peers.Endpoint, prompt: str, tokens: int,
                            on_token: Callable[[], None] | None = None, sampling: str = "greedy") -> Trace:
    """One streamed /v1/completions request; a token event is an SSE chunk carrying text (`on_token`
    is called at each)."""
    body = {"model": endpoint.model, "prompt": prompt, "max_tokens": tokens, **SAMPLING[sampling],
            "stream": True, "stream_options": {"include_usage": True}, **endpoint.extra}
    start = time.perf_counter()
    arrivals: list[float] = []
    pieces: list[str] = []
    usage: int | None = None
    async with client.stream("POST", f"{endpoint.url}/v1/completions", json=body) as response:
        if response.status_code == 503:
            raise Unavailable(f"{endpoint.name}: HTTP 503: {(await response.aread())[:300]!r}")
        if response.status_code != 200:
            raise RuntimeError(f"{endpoint.name}: HTTP {response.status_code}: {(await response.aread())[:500]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            event = json.loads(data)
            if "error" in event:
                raise RuntimeError(f"{endpoint.name}: {event['error']}")
            if event.get("usage"):
                usage = event["usage"].get("completion_tokens", usage)
            choices = event.get("choices") or []
            if choices and choices[0].get("text"):
                arrivals.append(time.perf_counter())
                pieces.append(choices[0]["text"])
                if on_token is not None:
                    on_token()
    return Trace(start, arrivals, usage if usage is not None else len(arrivals), "".join(pieces))


async def http_cell(endpoint: peers.Endpoint, prompts: list[str], concurrency: int, requests: int, tokens: int,
                    sampling: str = "greedy") -> Cell:
    """`requests` requests, at most `concurrency` in flight, prompts taken in turn."""
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:
        async def one(i: int) -> Trace:
            async with gate:
                return await stream_completion(client, endpoint, prompts[i % len(prompts)], tokens, sampling=sampling)

        traces = await asyncio.gather(*(one(i) for i in range(requests)))
    short = [t.tokens for t in traces if t.tokens != tokens]
    if short:
        raise RuntimeError(f"{endpoint.name}: requests ended early with {short} tokens (end of sequence not ignored?)")
    return summarise(traces)


# --- the in-process systems ----------------------------------------------------------------------

def inprocess_round(model: Path, context: int, prompts: list[str], requests: int, tokens: int) -> dict[int, Cell]:
    """(a): llama_cpp.Llama, streamed, one request after another (concurrency 1 only)."""
    import llama_cpp

    llm = llama_cpp.Llama(str(model), n_ctx=context, n_threads=peers.threads(), n_threads_batch=peers.threads(),
                          verbose=False)
    bias = {t: -100.0 for t in peers.eog_tokens(model)}

    def one(prompt: str, max_tokens: int) -> Trace:
        start = time.perf_counter()
        arrivals = []
        for chunk in llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, stream=True,
                                           logit_bias=bias):
            if chunk["choices"][0]["text"]:
                arrivals.append(time.perf_counter())
        return Trace(start, arrivals, len(arrivals))

    try:
        one(prompts[0], 8)  # warm up
        return {1: summarise([one(prompts[i % len(prompts)], tokens) for i in range(requests)])}
    finally:
        llm.close()


def limit_round(model: Path, concurrency: list[int], tokens: int) -> dict[int, Cell]:
    """(c): bench/batch_limit.py's bare loop; it reports throughput only (all prompts start together)."""
    loop = BareLoop(model, max(concurrency))
    encoded = [loop.tokenize(chat(p)) for p in PROMPTS]
    loop.run(encoded[:1], 8)  # warm up
    out = {}
    for n in concurrency:
        produced, seconds = loop.run([encoded[i % len(encoded)] for i in range(n)], tokens)
        out[n] = Cell(produced / seconds)
    return out


# --- orchestration -------------------------------------------------------------------------------

@dataclass
class Run:
    """Everything measured: per system and concurrency one cell per round; peak RSS over rounds."""

    cells: dict[str, dict[int, list[Cell]]] = field(default_factory=dict)
    rss: dict[str, int] = field(default_factory=dict)
    flash: bool | None = None  # llama-server's faster flash-attention setting, probed in the first round
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, cells: dict[int, Cell]) -> None:
        for n, cell in cells.items():
            self.cells.setdefault(name, {}).setdefault(n, []).append(cell)
            print(f"  {LABELS[name]} N={n}: {cell.tokens_per_s:.1f} tok/s", flush=True)

    def medians(self, name: str) -> dict[int, Cell]:
        return {n: median_cell(cells) for n, cells in sorted(self.cells.get(name, {}).items())}


def http_round(endpoint: peers.Endpoint, prompts: list[str], concurrency: list[int], args,
               notes: list[str]) -> dict[int, Cell]:
    """Every concurrency once; a cell that meets a 503 is run again once, and the error goes into
    the report's notes (a benchmark that hid it would hide a bug)."""
    async def cell(n: int, requests: int, tokens: int) -> Cell:
        try:
            return await http_cell(endpoint, prompts, n, requests, tokens, args.sampling)
        except Unavailable as exc:
            notes.append(f"{endpoint.name} N={n}: retried after {exc}")
            print(f"  retrying after {exc}", flush=True)
            return await http_cell(endpoint, prompts, n, requests, tokens, args.sampling)

    async def go() -> dict[int, Cell]:
        await cell(1, 1, 8)  # warm up (our Runner loads the model on first use)
        cells = {}
        for n in concurrency:
            requests = max(n, args.min_requests)
            if args.fresh:  # the same prompts for every system in this round, never seen before by any
                nonlocal prompts
                prompts = [fresh_prompt(args.rounds_done, n, i) for i in range(requests)]
            cells[n] = await cell(n, requests, args.tokens)
        return cells

    return asyncio.run(go())


_WORDS = ("river", "copper", "lantern", "maple", "orbit", "velvet", "harbor", "quartz", "meadow", "signal",
          "falcon", "ember", "glacier", "mosaic", "tundra", "violet", "canyon", "saffron", "beacon", "pebble")


def fresh_prompt(round_no: int, concurrency: int, i: int) -> str:
    """A chat prompt of about 40 tokens that no earlier request began with: a seeded list of words
    first (so no prompt cache, ours or llama-server's, can serve it), then one of the grid's questions."""
    rng = random.Random(f"{round_no}/{concurrency}/{i}")
    words = " ".join(rng.choice(_WORDS) for _ in range(12))
    return chat(f"Keep these words in mind: {words}. {PROMPTS[i % len(PROMPTS)]}")


def fastest_flash(model: Path, prompts: list[str], logs: Path, args, notes: list[str]) -> tuple[bool, str]:
    """llama-server's flash attention on vs off at N=8 (one cell each); the faster runs the grid."""
    rates = {}
    slots = args.peer_slots or args.slots
    for flash in (True, False):
        with peers.llama_server(model, args.context, slots, flash, logs) as endpoint:
            rates[flash] = http_round(endpoint, prompts, [slots], args, notes)[slots].tokens_per_s
    best = rates[True] >= rates[False]
    return best, (f"llama-server flash attention probe at N={slots}: on {rates[True]:.1f} tok/s, "
                  f"off {rates[False]:.1f} tok/s; the grid uses {'on' if best else 'off'}")


def run_round(name: str, model: Path, prompts: list[str], logs: Path, args, run: Run) -> None:
    """One round of one system: started fresh, every concurrency once, stopped."""
    print(f"== {LABELS[name]}", flush=True)
    if name == "inprocess":
        run.add(name, inprocess_round(model, args.context, prompts, max(1, args.min_requests), args.tokens))
        return
    if name == "limit":
        run.add(name, limit_round(model, args.concurrency, args.tokens))
        return
    if name in OURS:
        server = peers.modelrunner_stack(model, args.context, args.slots, logs, prompt_cache=name == "stack")
    elif name == "llama-cpp-server":
        server = peers.llama_cpp_server(model, args.context, logs)
    else:
        if run.flash is None:
            run.flash, note = fastest_flash(model, prompts, logs, args, run.notes)
            run.notes.append(note)
        server = peers.llama_server(model, args.context, args.peer_slots or args.slots, run.flash, logs)
    with server as endpoint:
        run.add(name, http_round(endpoint, prompts, args.concurrency, args, run.notes))
        rss = endpoint.peak_rss_bytes()
        if rss is not None:
            run.rss[name] = max(rss, run.rss.get(name, 0))


def ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.0f}"


def ratio(num: float | None, den: float | None) -> str:
    return "—" if not num or not den else f"{num / den:.2f}"


def report(run: Run, args) -> str:
    lines = [
        "# Serving benchmark (issue 10)",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}, {os.cpu_count()} cores, {peers.threads()} threads "
        f"per system; Gemma 3 270M Q4_K_M, context {args.context}, {args.slots} slots (llama-server {args.peer_slots or args.slots}); "
        f"{'fresh prompts (none repeats)' if args.fresh else 'the 8 repeated prompts'}; {args.tokens} {args.sampling} tokens per "
        f"request (EOS ignored); a cell sends max(N, {args.min_requests}) requests, N in flight; medians of "
        f"{args.rounds_done} of {args.repeats} rounds. Client: httpx async streaming on /v1/completions. Times in ms.",
        "",
        "| system | N | tok/s | TTFT p50 | TTFT p95 | ITL p50 | peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    medians = {name: run.medians(name) for name in SYSTEMS}
    for name in SYSTEMS:
        for n, cell in medians[name].items():
            rss = run.rss.get(name)
            lines.append(f"| {LABELS[name]} | {n} | {cell.tokens_per_s:.1f} | {ms(cell.ttft_p50)} | {ms(cell.ttft_p95)} "
                         f"| {ms(cell.itl_p50)} | {'—' if rss is None else f'{rss / 2**20:.0f}'} |")
    a, c, d = (medians[k] for k in ("inprocess", "limit", "llama-server"))
    for name in OURS:
        if not medians[name]:
            continue
        lines += ["", f"Targets ({LABELS[name]} / peer):", "",
                  "| N | tok/s vs (a) >= 0.95 | tok/s vs (c) >= 0.9 | tok/s vs (d) >= 1.0 | TTFT p50 vs (d) <= 1.0 |",
                  "|---|---|---|---|---|"]
        for n, cell in sorted(medians[name].items()):
            lines.append(
                f"| {n} | {ratio(cell.tokens_per_s, a[1].tokens_per_s) if n == 1 and 1 in a else '—'} "
                f"| {ratio(cell.tokens_per_s, c[n].tokens_per_s) if n in c else '—'} "
                f"| {ratio(cell.tokens_per_s, d[n].tokens_per_s) if n in d else '—'} "
                f"| {ratio(cell.ttft_p50, d[n].ttft_p50) if n in d else '—'} |")
        lines += ["", f"Runner peak RSS vs llama-server's (<= 1.2): {ratio(run.rss.get(name), run.rss.get('llama-server'))}"]
    if run.notes:
        lines += [""] + [f"- {note}" for note in run.notes]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {', '.join(SYSTEMS)}")
    parser.add_argument("--concurrency", default="1,4,8,16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--min-requests", type=int, default=len(PROMPTS), help="requests per cell at least")
    parser.add_argument("--context", type=int, default=8192, help="KV cache tokens, the same for every system")
    parser.add_argument("--slots", type=int, default=DEFAULT_SLOTS,
                        help="parallel slots of the stack's Runner and of llama-server (the issue's grid: 8)")
    parser.add_argument("--peer-slots", type=int, default=0,
                        help="llama-server's slots when they differ from --slots (its default is 4)")
    parser.add_argument("--fresh", action="store_true",
                        help="every request a prompt never sent before (the default workload repeats 8 prompts)")
    parser.add_argument("--sampling", choices=sorted(SAMPLING), default="greedy",
                        help="greedy, or sampled: temperature 0.8, top-k 40, top-p 0.95, min-p 0.05 (llama-server's defaults)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(args.systems) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown systems {unknown}: choose from {', '.join(SYSTEMS)}")
    args.concurrency = [int(n) for n in args.concurrency.split(",")]
    args.rounds_done = 0
    return args


@contextlib.contextmanager
def log_dir() -> Iterator[Path]:
    """Servers' logs, kept only when something fails (then the path is printed)."""
    path = Path(tempfile.mkdtemp(prefix="serve-bench-logs-"))
    try:
        yield path
    except BaseException:
        print(f"logs kept in {path}", file=sys.stderr)
        raise
    else:
        shutil.rmtree(path, ignore_errors=True)


def interleaved(systems: Sequence[str], repeats: int,
                run: Callable[[str, Path, int], dict[str, float]]) -> dict[str, list[dict[str, float]]]:
    """`run(system, logs, round_no)` for every system in turn, `repeats` rounds (so a noisy neighbour
    hits all alike); each system's figures by round."""
    results: dict[str, list[dict[str, float]]] = {name: [] for name in systems}
    with log_dir() as logs:
        for round_no in range(repeats):
            for name in systems:
                results[name].append(run(name, logs, round_no))
                print(name, {k: round(v, 3) for k, v in results[name][-1].items()}, flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    model = peers.gemma_path()
    prompts = [chat(p) for p in PROMPTS]
    run = Run()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with log_dir() as logs:
        for done in range(1, args.repeats + 1):  # rounds over all systems: a noisy neighbour hits all alike
            for name in SYSTEMS:
                if name in args.systems:
                    run_round(name, model, prompts, logs, args, run)
            args.rounds_done = done
            args.output.write_text(report(run, args))  # a run cut short still leaves its table
    print(report(run, args))

if __name__ == "__main__":
    main()
