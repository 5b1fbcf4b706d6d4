"""Models a Runner loads before it takes traffic (`--runner-preload`), for replicas behind a picker.

A replica in an inference pool must not be picked before it can serve: until every preloaded model
is loaded, the Runner service's health answers NOT_SERVING (the pod stays unready, so the endpoint
picker skips it) while the process itself stays SERVING (liveness holds). A model that is not in the
Store yet, as on a node that starts before its model was pulled, is waited for: the Runner retries,
logging why, and never exits for it. Preloaded models stay loaded (keep-alive forever).
"""

from __future__ import annotations

import asyncio
import logging

from modelrunner.runner.manager import ModelManager

log = logging.getLogger(__name__)
RETRY_SECONDS = 5.0
FOREVER = "-1"


def parse_preload(text: str) -> list[str]:
    """Model names from a comma-separated list; empty entries are ignored."""
    return [name.strip() for name in text.split(",") if name.strip()]


async def preload(manager: ModelManager, names: list[str], retry_seconds: float = RETRY_SECONDS) -> None:
    """Loads `names` one by one, each retried until it loads; returns when all are loaded."""
    for name in names:
        while True:
            try:
                await manager.load(name, FOREVER)
                log.info("preloaded", extra={"fields": {"model": name}})
                break
            except Exception as exc:  # noqa: BLE001 - whatever stops a load now, the next try may pass
                log.warning("waiting for model", extra={"fields": {"model": name, "error": str(exc), "retry_s": retry_seconds}})
                await asyncio.sleep(retry_seconds)
