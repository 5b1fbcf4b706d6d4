"""Running a transfer's per-blob tasks together: the first failure cancels the rest and is raised."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable


async def run_all(jobs: Iterable[Coroutine[None, None, None]]) -> None:
    """Runs `jobs` concurrently; raises the first error itself (not an ExceptionGroup)."""
    try:
        async with asyncio.TaskGroup() as group:
            for job in jobs:
                group.create_task(job)
    except BaseExceptionGroup as errors:
        first = errors.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
