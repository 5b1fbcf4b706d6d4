"""Where a serving cell's time goes (issue 15): while N streams of the grid's repeated prompts run
against a warm stack (bench/serve_bench.py's client), counts the CPU time of every thread of the
gateway, the Runner and its engine process (from /proc, per 1000 tokens served), and with --py-spy
samples the engine, the Runner and the gateway and prints each one's busiest frames.

py-spy is not a project dependency: `pip install py-spy` anywhere and name it with --py-spy.

    python bench/profile_cell.py [--py-spy /tmp/gl/bin/py-spy] [--concurrency 4] [--seconds 25] [--sampling sampled] [--raw-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402
from batch_limit import PROMPTS, chat  # noqa: E402
from serve_bench import http_cell, log_dir  # noqa: E402


def busiest(raw: Path, top: int) -> list[str]:
    """The frames most samples were in (their own time), from py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            own[stack.split(";")[-1]] += int(count)
    total = sum(own.values()) or 1
    return [f"{n / total:6.1%}  {frame}" for frame, n in own.most_common(top)] + [f"({total} samples)"]


def thread_cpu(pid: str) -> dict[str, float]:
    """CPU seconds (user + system) by thread name (threads of one name summed), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                head, _, rest = f.read().rpartition(")")
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        name = head.partition("(")[2]
        fields = rest.split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def gateway_pid(runner_pid: int) -> str:
    """The Runner's sibling gateway: the launcher's child running modelrunner.gateway (not any other
    stack's gateway on this machine)."""
    with open(f"/proc/{runner_pid}/stat") as f:
        launcher = int(f.read().rpartition(")")[2].split()[1])
    for pid in peers.children(launcher):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"modelrunner.gateway" in f.read().split(b"\0"):
                return str(pid)
    raise RuntimeError(f"no gateway among the children of the launcher {launcher}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--py-spy", help="py-spy's path: also sample the busiest frames")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=25)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--sampling", choices=("greedy", "sampled"), default="greedy", help="as bench/serve_bench.py's")
    parser.add_argument("--raw-dir", type=Path, help="keep py-spy's raw (collapsed) stacks here, one file per process")
    args = parser.parse_args(argv)
    prompts = [chat(p) for p in PROMPTS]
    n = args.concurrency
    with log_dir() as logs, tempfile.TemporaryDirectory(prefix="profile-") as work, \
            peers.modelrunner_stack(peers.gemma_path(), 8192, args.slots, logs) as endpoint:
        asyncio.run(http_cell(endpoint, prompts, n, max(n, 8), 128))  # loads the model, warms the cache
        engine = str(peers.children(endpoint.pid)[0])
        targets = {"engine": engine, "runner": str(endpoint.pid), "gateway": gateway_pid(endpoint.pid)}
        counted = {**targets, "client": str(os.getpid())}
        spies = [subprocess.Popen([args.py_spy, "record", "-d", str(args.seconds), "-r", "50", "-f", "raw", "--nonblocking",
                                   "-o", f"{work}/{name}.txt", "-p", pid], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for name, pid in targets.items()] if args.py_spy else []
        before = {name: thread_cpu(pid) for name, pid in counted.items()}
        started, rates, tokens = time.monotonic(), [], 0
        while time.monotonic() - started < args.seconds - 1:
            rates.append(asyncio.run(http_cell(endpoint, prompts, n, max(n, 8), 128, args.sampling)).tokens_per_s)
            tokens += max(n, 8) * 128
        wall = time.monotonic() - started
        after = {name: thread_cpu(pid) for name, pid in counted.items()}
        for spy in spies:
            spy.wait()
        print(f"N={n}: tok/s per cell {[round(r, 1) for r in rates]}; {tokens} tokens in {wall:.1f} s")
        print("\nCPU seconds per 1000 tokens, by process and thread:")
        for name in counted:
            used = {t: after[name].get(t, 0.0) - before[name].get(t, 0.0) for t in after[name]}
            busy = sorted(((sec, t) for t, sec in used.items() if sec > 0), reverse=True)
            print(f"  {name}: {sum(used.values()) * 1000 / tokens:.3f}  "
                  + ", ".join(f"{t} {sec * 1000 / tokens:.3f}" for sec, t in busy[:6]))
        for name in targets if args.py_spy else ():
            print(f"\n{name} (pid {targets[name]}), busiest frames, own time:")
            print("\n".join(busiest(Path(work) / f"{name}.txt", 8)))
            if args.raw_dir:
                args.raw_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy(Path(work) / f"{name}.txt", args.raw_dir / f"{name}.txt")


if __name__ == "__main__":
    main()
