"""`python -m modelrunner.distribution`: the Distribution process (flags and MODELRUNNER_* variables)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from modelrunner.common import config
from modelrunner.common.server import grace_seconds, init_process, serve
from modelrunner.distribution import settings
from modelrunner.distribution.context import Context
from modelrunner.distribution.registry import RegistryOptions
from modelrunner.distribution.servicer import SERVICE_NAME, DistributionServicer, register
from modelrunner.distribution.store_client import StoreClient, store_channel

SETTINGS = (config.LISTEN, config.STORE_ADDR, *settings.SETTINGS, *config.COMMON)


def context_from(args, store: StoreClient) -> Context:
    insecure = frozenset(r.strip() for r in args.insecure_registries.split(",") if r.strip())
    concurrency = int(args.pull_concurrency)
    if concurrency < 1:
        raise SystemExit(f"modelrunner distribution: --pull-concurrency must be at least 1, not {concurrency}")
    upload_chunk = int(args.upload_chunk_size)
    if upload_chunk < 1:
        raise SystemExit(f"modelrunner distribution: --upload-chunk-size must be at least 1, not {upload_chunk}")
    return Context(
        store=store,
        options=RegistryOptions(ca_bundle=args.ca_bundle, insecure_registries=insecure),
        default_registry=args.default_registry,
        concurrency=concurrency,
        upload_chunk=upload_chunk,
    )


async def run(args) -> None:
    channel = store_channel(args.store_addr)
    ctx = context_from(args, StoreClient(channel))
    await serve(
        "distribution",
        args.listen or config.DISTRIBUTION_ADDR.value(),
        [SERVICE_NAME],
        register(DistributionServicer(ctx)),
        grace=grace_seconds(args),
        on_stop=channel.close,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = config.parse("The Model Runner Distribution: models between OCI registries and the Store.", SETTINGS, argv)
    init_process("distribution", args)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request, URL included
    asyncio.run(run(args))
