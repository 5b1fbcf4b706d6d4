"""Progress of one pull or push: counters the transfers bump, sampled into `Progress` messages.

Transfers only add bytes to counters; a reporter samples them every TICK_S and emits one message
per layer that moved, so a fast transfer costs no more messages than a slow one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from modelrunner.v1 import types_pb2

TICK_S = 0.1


@dataclass
class LayerCounter:
    """Bytes of one blob the destination holds; `start` is where this transfer found it."""

    digest: str
    size: int
    current: int = 0
    start: int | None = None

    def found(self, held: int) -> None:
        """Where the blob stands when (re)starting; the first call fixes `start`."""
        self.current = held
        if self.start is None:
            self.start = held


@dataclass
class TransferProgress:
    mode: str  # "pull" | "push"
    layers: dict[str, LayerCounter] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def watch(self, counter: LayerCounter) -> None:
        self.layers[counter.digest] = counter

    @property
    def moved(self) -> int:
        """Bytes actually transferred (what was already there does not count toward the rate)."""
        return sum(max(0, c.current - (c.start or 0)) for c in self.layers.values())

    @property
    def total(self) -> int:
        return sum(c.size for c in self.layers.values())

    @property
    def current(self) -> int:
        return sum(c.current for c in self.layers.values())

    def message(self, counter: LayerCounter | None, text: str) -> types_pb2.Progress:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        msg = types_pb2.Progress(
            type="progress", message=text, total=self.total, current=self.current, mode=self.mode, rate=self.moved / elapsed
        )
        if counter is not None:
            msg.layer.CopyFrom(types_pb2.LayerProgress(id=counter.digest, size=counter.size, current=counter.current))
        return msg


async def sample(progress: TransferProgress, verb: str, stop: asyncio.Event) -> AsyncIterator[types_pb2.Progress]:
    """Messages for each layer whose counter moved since the last tick, until `stop` is set."""
    seen: dict[str, int] = {}
    while True:
        stopped = stop.is_set()
        for counter in list(progress.layers.values()):
            if seen.get(counter.digest) != counter.current:
                seen[counter.digest] = counter.current
                yield progress.message(counter, f"{verb} {progress.current / 1e6:.2f} MB of {progress.total / 1e6:.2f} MB")
        if stopped:
            return
        try:
            await asyncio.wait_for(stop.wait(), TICK_S)
        except asyncio.TimeoutError:
            pass
