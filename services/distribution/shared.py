"""Blob downloads in flight in this process, by digest: concurrent pulls needing a blob share one.

The download runs as its own task (with its own registry connection), so a pull that goes away
does not break it for the others; it is cancelled only when nobody waits on it any more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass

from modelrunner.common.oci import Blob
from modelrunner.distribution.progress import LayerCounter


@dataclass
class _Download:
    task: asyncio.Task
    counter: LayerCounter
    waiters: int = 0


class SharedDownloads:
    def __init__(self) -> None:
        self._running: dict[str, _Download] = {}

    def running(self, digest: str) -> bool:
        return digest in self._running

    async def run(
        self,
        blob: Blob,
        start: Callable[[LayerCounter], Coroutine[None, None, None]],
        watch: Callable[[LayerCounter], None],
    ) -> None:
        """Waits for `blob`, starting `start(counter)` unless it is already running; `watch` gets its counter."""
        download = self._running.get(blob.digest)
        if download is None:
            counter = LayerCounter(blob.digest, blob.size)
            download = _Download(asyncio.create_task(start(counter)), counter)
            self._running[blob.digest] = download
            download.task.add_done_callback(lambda _: self._forget(blob.digest, download))
        watch(download.counter)
        download.waiters += 1
        try:
            await asyncio.shield(download.task)
        finally:
            download.waiters -= 1
            if download.waiters == 0 and not download.task.done():
                download.task.cancel()

    def _forget(self, digest: str, download: _Download) -> None:
        if self._running.get(digest) is download:
            del self._running[digest]
