"""`python -m modelrunner.store`: the Store process (flags and MODELRUNNER_* variables, see --help)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from modelrunner.store.index import CorruptIndex
from modelrunner.store.models import ModelStore
from modelrunner.store.servicer import SERVICE_NAME, StoreServicer, register

from modelrunner.common import config
from modelrunner.common.server import grace_seconds, init_process, serve

log = logging.getLogger(__name__)

SETTINGS = (config.LISTEN, config.MODELS_DIR, config.DATA_DIR, *config.COMMON)
# Disk I/O threads: enough for many concurrent blob streams, each using one at a time.
IO_THREADS = 32


async def run(args) -> None:
    root = config.models_dir(args.models_dir, args.data_dir)
    executor = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="store-io")
    store = ModelStore(root, executor)
    missing = await asyncio.to_thread(store.open)
    log.info(
        "store opened",
        extra={"fields": {"models_dir": str(root), "models": len(store.index.models()), "missing_blobs": len(missing)}},
    )

    async def on_stop() -> None:
        executor.shutdown(wait=True)

    await serve(
        "store",
        args.listen or config.STORE_ADDR.value(),
        [SERVICE_NAME],
        register(StoreServicer(store)),
        grace=grace_seconds(args),
        on_stop=on_stop,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = config.parse("The Model Runner Store: the models' OCI image layout on disk.", SETTINGS, argv)
    init_process("store", args)
    try:
        asyncio.run(run(args))
    except CorruptIndex as exc:
        log.error("cannot open the store", extra={"fields": {"error": str(exc)}})
        raise SystemExit(f"modelrunner store: {exc}; fix or move index.json (blobs are untouched)") from None
    except OSError as exc:
        raise SystemExit(f"modelrunner store: {exc}") from None
