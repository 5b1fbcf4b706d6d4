"""Many Runner replicas behind the endpoint picker, simulated: what routing by load buys over random
routing for 1, 2, 4 and 8 replicas, since two replicas on this 2-core machine would measure nothing.

Each replica replays the measured service curve below: 8 slots (the grid's setting); with r sequences
decoding it makes CURVE's tok/s at N=r in all, shared evenly; a request admitted to a free slot gives
its first token after CURVE's TTFT at N=(sequences then running), holding its slot meanwhile; beyond 8
it waits in a queue, first in first out. Between measured N the curve is linear.
The picker is the EPP's queue-then-load rule as tests/support/epp_double.py plays it: fewest waiting,
then fewest running, ties round-robin, read from a snapshot refreshed every `--refresh-ms` (the EPP's
default --refresh-metrics-interval is 50 ms). Random routing picks uniformly. Both policies see the
same seeded Poisson arrivals and output lengths (uniform 16..240 tokens, mean 128 as in the grid).

    python bench/pool_sim.py [--requests 2000] [--seed 1] [--refresh-ms 50]

Prints a markdown table: offered load, throughput and TTFT p95, picker vs random.
"""

from __future__ import annotations

import argparse
import math
import random
from collections import deque
from dataclasses import dataclass, field

# N streams: (tok/s, TTFT p50 ms) of one replica. tok/s: bench/RESULTS.md, "Serving with one engine
# process per model" (2026-12-02, Gemma 3 270M Q4_K_M, 8 slots). That section gives TTFT only as a
# ratio to llama-server, so TTFT is bench/results/serve_bench.md's prompt-cache-off stack row (distinct
# prompts, as a pool's users send) scaled to that run's slower host by the tok/s ratio at each N:
# 60 ms x 67.7/38.9, 180 x 102.8/61.1, 361 x 128.1/80.0, 4321 x 129.8/79.2 (at 16, half of it queued).
CURVE = {1: (38.9, 104), 4: (61.1, 303), 8: (80.0, 578), 16: (79.2, 7082)}
SLOTS = 8
MIN_TOKENS, MAX_TOKENS = 16, 240
REPLICAS = (1, 2, 4, 8)
LOADS = (0.5, 0.7, 0.85, 0.95)  # offered tokens over the pool's capacity at full slots
EPSILON = 1e-9


def interpolate(n: int, column: int) -> float:
    points = sorted(CURVE)
    if n in CURVE:
        return CURVE[n][column]
    low = max(p for p in points if p < n)
    high = min(p for p in points if p > n)
    share = (n - low) / (high - low)
    return CURVE[low][column] + share * (CURVE[high][column] - CURVE[low][column])


@dataclass(eq=False)
class Request:
    arrival: float
    tokens: int
    first_token: float = math.nan
    done: float = math.nan


@dataclass
class Replica:
    queue: deque[Request] = field(default_factory=deque)
    prefilling: dict[Request, float] = field(default_factory=dict)  # -> when its first token comes
    decoding: dict[Request, float] = field(default_factory=dict)  # -> tokens left
    clock: float = 0.0

    @property
    def waiting(self) -> int:
        return len(self.queue)

    @property
    def running(self) -> int:
        return len(self.prefilling) + len(self.decoding)

    def _rate(self) -> float:
        """Tokens per second of each decoding sequence."""
        return interpolate(len(self.decoding), 0) / len(self.decoding)

    def advance(self, now: float) -> None:
        if self.decoding:
            made = self._rate() * (now - self.clock)
            for request in self.decoding:
                self.decoding[request] -= made
        self.clock = now

    def next_event(self) -> float:
        soonest = min(self.prefilling.values(), default=math.inf)
        if self.decoding:
            soonest = min(soonest, self.clock + min(self.decoding.values()) / self._rate())
        return soonest

    def step(self, now: float) -> None:
        """Applies what is due at `now` (first tokens, finished sequences), then fills free slots."""
        for request, ready in list(self.prefilling.items()):
            if ready <= now + EPSILON:
                del self.prefilling[request]
                request.first_token = ready
                self.decoding[request] = request.tokens - 1
        for request, left in list(self.decoding.items()):
            if left <= EPSILON:
                del self.decoding[request]
                request.done = now
        while self.queue and self.running < SLOTS:
            request = self.queue.popleft()
            self.prefilling[request] = now + interpolate(self.running + 1, 1) / 1000


class Picker:
    """Fewest waiting, then fewest running, in the snapshot it reads; ties round-robin."""

    def __init__(self) -> None:
        self._turn = 0

    def choose(self, loads: list[tuple[int, int]]) -> int:
        best = min(loads)
        tied = [i for i, load in enumerate(loads) if load == best]
        if len(tied) == 1:
            return tied[0]
        self._turn += 1
        return tied[self._turn % len(tied)]


def arrivals(rate: float, count: int, seed: int) -> list[tuple[float, int]]:
    rng = random.Random(seed)
    now, out = 0.0, []
    for _ in range(count):
        now += rng.expovariate(rate)
        out.append((now, rng.randint(MIN_TOKENS, MAX_TOKENS)))
    return out


def simulate(workload: list[tuple[float, int]], replicas: int, policy: str, refresh_s: float, seed: int) -> list[Request]:
    pool = [Replica() for _ in range(replicas)]
    requests = [Request(arrival, tokens) for arrival, tokens in workload]
    picker, rng = Picker(), random.Random(seed)
    snapshot = [(0, 0)] * replicas
    last = 0.0
    pending = deque(requests)
    while pending or any(r.running or r.waiting for r in pool):
        now = min(pending[0].arrival if pending else math.inf, *(r.next_event() for r in pool))
        if refresh_s and math.floor(now / refresh_s) != math.floor(last / refresh_s):
            snapshot = [(r.waiting, r.running) for r in pool]  # counts held since the last event
        last = now
        for replica in pool:
            replica.advance(now)
            replica.step(now)
        if pending and pending[0].arrival <= now:
            request = pending.popleft()
            if policy == "random":
                chosen = rng.randrange(replicas)
            else:
                chosen = picker.choose(snapshot if refresh_s else [(r.waiting, r.running) for r in pool])
            pool[chosen].queue.append(request)
            pool[chosen].step(now)
            if refresh_s == 0:
                snapshot = [(r.waiting, r.running) for r in pool]
    return requests


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def summary(requests: list[Request]) -> tuple[float, float]:
    """Output tok/s over the whole run, and TTFT p95 in seconds."""
    span = max(r.done for r in requests) - min(r.arrival for r in requests)
    return sum(r.tokens for r in requests) / span, p95([r.first_token - r.arrival for r in requests])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="per cell")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--refresh-ms", type=float, default=50.0, help="how old the picker's metrics may be")
    args = parser.parse_args()
    capacity = interpolate(SLOTS, 0) / ((MIN_TOKENS + MAX_TOKENS) / 2)  # requests/s one replica finishes
    print("| replicas | offered req/s (load) | tok/s picker | tok/s random | TTFT p95 picker (s) | TTFT p95 random (s) |")
    print("|---|---|---|---|---|---|")
    for replicas in REPLICAS:
        for load in LOADS:
            rate = load * capacity * replicas
            workload = arrivals(rate, args.requests, args.seed)
            picked = summary(simulate(workload, replicas, "picker", args.refresh_ms / 1000, args.seed))
            scattered = summary(simulate(workload, replicas, "random", args.refresh_ms / 1000, args.seed))
            print(f"| {replicas} | {rate:.2f} ({load:.2f}) | {picked[0]:.1f} | {scattered[0]:.1f} "
                  f"| {picked[1]:.2f} | {scattered[1]:.2f} |")


if __name__ == "__main__":
    main()
