"""Registry answers read within limits, as sent: a 2 GB manifest or a gzip bomb cannot exhaust the
Distribution. Every request asks `Accept-Encoding: identity`; a body is never decompressed."""

from __future__ import annotations

import asyncio

import grpc
import httpx

from modelrunner.common.config import Setting
from modelrunner.common.errors import ServiceError

MAX_MANIFEST_BYTES = 4 << 20  # a manifest or a config; model manifests are a few KiB
MAX_ERROR_BYTES = 1 << 20  # an error body, a token answer
BODY_DEADLINE = Setting(
    "body-deadline", "60",
    "seconds a registry may take in all to send a manifest, config, token or error body (httpx's timeout is per "
    "read: a body dripped a byte at a time would otherwise hold a pull for hours)",
)
BODY_DEADLINE_S = float(BODY_DEADLINE.value())


class BodyTooLarge(Exception):
    pass


async def read_body(response: httpx.Response, limit: int, what: str = "a registry's answer") -> bytes:
    """The raw body, up to `limit` bytes (BodyTooLarge past it), without decoding any Content-Encoding,
    within BODY_DEADLINE_S in all (DEADLINE_EXCEEDED naming `what` past it)."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge()
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_DEADLINE_S):
            async for data in response.aiter_raw():
                size += len(data)
                if size > limit:
                    raise BodyTooLarge()
                parts.append(data)
    except TimeoutError:
        raise ServiceError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"{what} did not arrive within {BODY_DEADLINE_S:g} s ({size} bytes came; {BODY_DEADLINE.env}); "
            "nothing was kept",
        ) from None
    return b"".join(parts)


def encoded(headers: httpx.Headers) -> str:
    """A Content-Encoding other than identity (asked for on every request), else ""."""
    encoding = headers.get("Content-Encoding", "").strip().lower()
    return "" if encoding in ("", "identity") else encoding


def limit_text(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 and not limit % (1 << 20) else f"{limit} bytes"
