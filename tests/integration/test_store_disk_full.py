"""A models volume that fills, against the real processes: docker-registry -> Distribution -> Store, and
blob uploads through the gateway.

The Store runs under a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored): a write past it fails with EFBIG
as one on a full disk fails with ENOSPC, and it needs no root. Either way the client sees 507 (or the
pull's error line) saying the blob does not fit and how large it is; nothing of the blob is kept or
counted as a model, every other model stays listed, the Store serves on, and once there is room (the
Store restarted without the limit) the same pull succeeds.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from modelrunner.common.errors import DISK_FULL, ServiceError
from modelrunner.common.gguf_info import human_size
from modelrunner.common.oci import Blob
from modelrunner.distribution.store_client import StoreClient, store_channel
from tests.support.registry import (
    Registry,
    ServiceProcess,
    dmr_artifact,
    file_size_limit,
    gateway,
    sha256_digest,
    upload,
)

LIMIT = 4 << 20  # the most bytes any one file of the Store may hold
MODELRUNNER = str(Path(sys.executable).parent / "modelrunner")
OCTETS = {"Content-Type": "application/octet-stream"}


@dataclass
class Full:
    registry: Registry
    store: ServiceProcess
    url: str
    models_dir: Path

    def ingest(self) -> list[str]:
        return sorted(p.name for p in (self.models_dir / "ingest").iterdir())

    def models(self) -> list[str]:
        return [m["id"] for m in httpx.get(f"{self.url}/models", timeout=10).json()]


@pytest.fixture
def full(tmp_path: Path, registry: Registry) -> Iterator[Full]:
    models_dir = tmp_path / "models"
    store = ServiceProcess("modelrunner.store", {"MODELRUNNER_MODELS_DIR": str(models_dir)}, tmp_path,
                           preexec_fn=file_size_limit(LIMIT)).start()
    distribution = ServiceProcess("modelrunner.distribution", {"MODELRUNNER_STORE_ADDR": store.addr}, tmp_path).start()
    try:
        with gateway(tmp_path, store.addr, distribution.addr) as url:
            yield Full(registry, store, url, models_dir)
    finally:
        distribution.stop()
        store.stop()


def publish(full: Full, name: str, gguf: bytes) -> tuple[str, str]:
    """A model in the registry; returns its reference and id."""
    manifest, blobs = dmr_artifact(gguf, f"license of {name}\n".encode())
    return f"{full.registry.host}/{name}:v1", upload(full.registry.url, name, "v1", manifest, blobs)


def create(full: Full, reference: str) -> httpx.Response:
    return httpx.post(f"{full.url}/models/create", json={"from": reference}, headers={"Accept": "application/json"},
                      timeout=120)


def pulled(full: Full, reference: str) -> str:
    """Pulls through the gateway (retrying while the Distribution reconnects to a restarted Store)."""
    deadline = time.monotonic() + 30
    while True:
        reply = create(full, reference)
        last = json.loads(reply.text.splitlines()[-1]) if reply.status_code == 200 else reply.json()
        if last.get("type") == "success":
            return last["model_id"]
        assert "unavailable" in reply.text.lower() and time.monotonic() < deadline, reply.text


def pull_failure(full: Full, reference: str) -> str:
    """The message of a pull the volume has no room for: a 507 before any progress line, else its error line."""
    reply = create(full, reference)
    if reply.status_code != 200:
        assert reply.status_code == 507 and "retry-after" not in reply.headers, reply.text
        error = reply.json()["error"]
        assert (error["type"], error["code"]) == ("server_error", "insufficient_storage"), error
        return error["message"]
    last = json.loads(reply.text.splitlines()[-1])
    assert last["type"] == "error", reply.text
    return last["message"]


def test_a_pull_that_fills_the_volume_fails_saying_so_keeps_nothing_and_the_store_serves_on(
    full: Full, tiny_gguf: Path
) -> None:
    """Before: UNKNOWN "Unexpected <class 'OSError'>" (a 500, or INTERNAL read as "the Store went away"),
    and on a real full disk the partial left behind held the last free bytes, so deleting a model to
    free space failed with ENOSPC rewriting index.json."""
    small, small_id = publish(full, "ai/small", tiny_gguf.read_bytes())
    assert pulled(full, small) == small_id  # fits under the limit
    weights = os.urandom(3 * LIMIT)
    big, big_id = publish(full, "ai/big", weights)

    message = pull_failure(full, big)
    assert f"blob {sha256_digest(weights)} ({human_size(len(weights))}) does not fit on the models volume" in message
    assert "File too large" in message and "discarded" in message, message
    assert f"Pulling {big.removesuffix(':v1')}:v1 needs" in message, message
    assert full.ingest() == [] and not (full.models_dir / "blobs" / "sha256" / sha256_digest(weights)[7:]).exists()
    assert full.models() == [small_id]

    cli = subprocess.run([MODELRUNNER, "pull", big], env={**os.environ, "MODELRUNNER_HOST": full.url},
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1 and "does not fit on the models volume" in cli.stderr, cli.stderr

    other, other_id = publish(full, "ai/other", tiny_gguf.read_bytes()[::-1])
    assert pulled(full, other) == other_id  # the Store serves on
    assert full.models() == [small_id, other_id] and full.ingest() == []

    full.store.stop()  # room at last: the same Store without the limit
    full.store.preexec_fn = None
    full.store.start()
    assert pulled(full, big) == big_id
    resolved = httpx.get(f"{full.url}/models/{big}", timeout=10).json()
    assert resolved["id"] == big_id and full.models() == [small_id, other_id, big_id]
    assert (full.models_dir / "blobs" / "sha256" / sha256_digest(weights)[7:]).read_bytes() == weights


def test_a_blob_upload_that_fills_the_volume_is_507_and_keeps_nothing(full: Full) -> None:
    data = os.urandom(2 * LIMIT)
    reply = httpx.put(f"{full.url}/models/blobs/{sha256_digest(data)}", content=data, headers=OCTETS, timeout=60)
    assert reply.status_code == 507 and "retry-after" not in reply.headers, reply.text
    error = reply.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "insufficient_storage")
    assert f"({human_size(len(data))}) does not fit on the models volume" in error["message"], error
    assert full.ingest() == []
    fits = os.urandom(LIMIT // 2)
    done = httpx.put(f"{full.url}/models/blobs/{sha256_digest(fits)}", content=fits, headers=OCTETS, timeout=60)
    assert done.status_code == 201, done.text


async def test_a_writer_stops_sending_once_the_store_has_no_room(full: Full) -> None:
    """The Store says it has answered (initial metadata) before reading on to the stream's end, and the
    Distribution's writer stops at once: without that, a pull streamed the rest of the blob from the
    registry only to have it thrown away before it learnt the disk was full."""
    chunk = os.urandom(1 << 20)
    taken = 0

    async def source() -> AsyncIterator[bytes]:
        nonlocal taken
        for taken in range(1, 1025):
            yield chunk

    blob = Blob("application/vnd.docker.ai.gguf.v3", "sha256:" + "ab" * 32, 1024 * len(chunk))
    async with store_channel(full.store.addr) as channel:  # as the Distribution's, telemetry included
        with pytest.raises(ServiceError) as exc:
            await asyncio.wait_for(StoreClient(channel).write(blob, 0, source()), 60)
    assert exc.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and exc.value.reason == DISK_FULL, exc.value.message
    assert taken < 256, f"the writer sent {taken} MiB of a blob the Store had refused after 4 MiB"
    assert full.ingest() == []
