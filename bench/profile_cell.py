"""Where a serving cell's time goes (issue 15): py-spy samples the Runner's engine process and its
parent while N streams of the grid's repeated prompts run against a warm stack (bench/serve_bench.py's
client), then prints each process's busiest frames.

py-spy is not a project dependency: `pip install py-spy` anywhere and name it with --py-spy.

    python bench/profile_cell.py --py-spy /tmp/gl/bin/py-spy [--concurrency 4] [--seconds 25]
"""

from __future__ import annotations

import argparse
import asyncio
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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--py-spy", required=True)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=25)
    parser.add_argument("--slots", type=int, default=8)
    args = parser.parse_args(argv)
    prompts = [chat(p) for p in PROMPTS]
    n = args.concurrency
    with log_dir() as logs, tempfile.TemporaryDirectory(prefix="profile-") as work, \
            peers.modelrunner_stack(peers.gemma_path(), 8192, args.slots, logs) as endpoint:
        asyncio.run(http_cell(endpoint, prompts, n, max(n, 8), 128))  # loads the model, warms the cache
        engine = subprocess.run(["pgrep", "-P", str(endpoint.pid)], capture_output=True, text=True).stdout.split()[0]
        targets = {"engine": engine, "runner": str(endpoint.pid)}
        spies = [subprocess.Popen([args.py_spy, "record", "-d", str(args.seconds), "-r", "50", "-f", "raw", "--nonblocking",
                                   "-o", f"{work}/{name}.txt", "-p", pid], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for name, pid in targets.items()]
        started, rates = time.monotonic(), []
        while time.monotonic() - started < args.seconds - 1:
            rates.append(asyncio.run(http_cell(endpoint, prompts, n, max(n, 8), 128)).tokens_per_s)
        for spy in spies:
            spy.wait()
        print(f"N={n}: tok/s per cell {[round(r, 1) for r in rates]}")
        for name in targets:
            print(f"\n{name} (pid {targets[name]}), busiest frames, own time:")
            print("\n".join(busiest(Path(work) / f"{name}.txt", 8)))


if __name__ == "__main__":
    main()
