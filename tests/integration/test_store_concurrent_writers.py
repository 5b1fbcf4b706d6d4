"""Writers of the same model or blob at once, against the real Store, Distribution and gateway processes:
two pulls of one model, a pull and a delete, uploads of one digest with one client gone half-way. Each
ends with one verified copy, exactly the models the order of events leaves, nothing in ingest/, and no
error that is not the client's."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import httpx

from modelrunner.common.oci import Blob
from modelrunner.distribution.store_client import StoreClient, store_channel
from modelrunner.v1 import distribution_pb2, distribution_pb2_grpc, store_pb2, store_pb2_grpc, types_pb2
from tests.integration.test_package_upload import Edge, edge  # noqa: F401 (edge: the fixture)
from tests.support.registry import (
    Registry,
    RegistryDouble,
    ServiceProcess,
    Stack,
    dmr_artifact,
    pull,
    sha256_digest,
    upload,
)

MIB = 1 << 20
OCTETS = {"Content-Type": "application/octet-stream"}


async def pull_through(address: str, reference: str) -> list[types_pb2.Progress]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = distribution_pb2_grpc.DistributionStub(channel)
        return [m async for m in stub.PullModel(distribution_pb2.PullModelRequest(reference=reference))]


async def until(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def ingest(models_dir: Path) -> list[str]:
    return sorted(p.name for p in (models_dir / "ingest").iterdir())


async def test_two_distributions_pulling_one_model_at_once_make_one_model(registry: Registry, tmp_path: Path) -> None:
    weights = os.urandom(32 * MIB)
    manifest, blobs = dmr_artifact(weights)
    model_id = upload(registry.url, "ai/twice", "v1", manifest, blobs)
    reference = f"{registry.host}/ai/twice:v1"
    stack = Stack.start(tmp_path)
    second = ServiceProcess("modelrunner.distribution", {"MODELRUNNER_STORE_ADDR": stack.store.addr}, tmp_path).start()
    try:
        results = await asyncio.gather(pull_through(stack.distribution.addr, reference),
                                       pull_through(second.addr, reference))
        async with grpc.aio.insecure_channel(stack.store.addr) as channel:
            store = store_pb2_grpc.StoreStub(channel)
            listed = await store.ListModels(store_pb2.ListModelsRequest())
            resolved = await store.ResolveModel(store_pb2.ResolveModelRequest(name=reference))
    finally:
        second.stop()
        stack.stop()
    for messages in results:  # the one told "existed" part-way still reports every byte
        assert messages[-1].type == "success" and messages[-1].model_id == model_id
        assert messages[-1].current == messages[-1].total == sum(len(b) for b in blobs.values())
    assert [m.id for m in listed.models] == [model_id]
    assert Path(resolved.gguf_paths[0]).read_bytes() == weights and ingest(stack.models_dir) == []


async def test_a_pull_racing_a_delete_of_a_blob_it_found_fetches_the_blob_again(tmp_path: Path) -> None:
    """The new model shares its license with the old one. The pull finds that blob in the Store; the
    old model is deleted, and its license collected, while the new weights download; the commit then
    lacks the blob. Before: the pull failed FAILED_PRECONDITION (a 409 saying "write it with WriteBlob
    first"); now it fetches the blob again and commits."""
    license_text = b"shared license\n"
    old_manifest, old_blobs = dmr_artifact(os.urandom(MIB), license_text)
    weights = os.urandom(2 * MIB)
    new_manifest, new_blobs = dmr_artifact(weights, license_text)
    release = threading.Event()

    def held_weights(handler) -> None:
        release.wait(30)
        handler.reply(200, weights, {"Content-Type": "application/octet-stream"})

    with RegistryDouble() as registry:
        registry.put_model("ai/old", "v1", old_manifest, old_blobs)
        registry.put_model("ai/new", "v1", new_manifest, new_blobs)
        registry.overrides.append(("GET", f"/v2/ai/new/blobs/{sha256_digest(weights)}", held_weights))
        stack = Stack.start(tmp_path)
        try:
            old_id = (await pull(stack, f"{registry.host}/ai/old:v1"))[-1].model_id
            pulling = asyncio.create_task(pull(stack, f"{registry.host}/ai/new:v1"))
            await until(lambda: any(r.path.endswith(sha256_digest(weights)) for r in registry.requests))
            license_path = stack.models_dir / "blobs" / "sha256" / sha256_digest(license_text)[7:]
            async with grpc.aio.insecure_channel(stack.store.addr) as channel:
                store = store_pb2_grpc.StoreStub(channel)
                deleted = await store.DeleteModel(store_pb2.DeleteModelRequest(name=f"{registry.host}/ai/old:v1"))
                assert deleted.actions[-1].deleted == old_id and not license_path.exists()
                release.set()
                messages = await pulling
                listed = await store.ListModels(store_pb2.ListModelsRequest())
                resolved = await store.ResolveModel(store_pb2.ResolveModelRequest(name=f"{registry.host}/ai/new:v1"))
        finally:
            release.set()
            stack.stop()
    assert messages[-1].type == "success", messages[-1]
    assert [m.id for m in listed.models] == [messages[-1].model_id]
    assert Path(resolved.license_path).read_bytes() == license_text
    assert Path(resolved.gguf_paths[0]).read_bytes() == weights and ingest(stack.models_dir) == []


def cut_upload(url: str, digest: str, data: bytes, sent: threading.Event, hang_up: threading.Event) -> None:
    """PUTs the first half of `data`, then hangs up without a word when `hang_up` is set."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(f"PUT /models/blobs/{digest} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                     f"Content-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\n\r\n".encode())
        conn.sendall(data[: len(data) // 2])
        sent.set()
        hang_up.wait(30)


def test_uploads_of_one_digest_while_another_client_hangs_up_half_way_leave_one_verified_blob(edge: Edge) -> None:
    """Two clients upload the blob while a third, which started first and holds the digest's write,
    hangs up half-way. Before: the gateway logged "Exception in ASGI application" with a traceback for
    the client that went away (grpc's cancelled call surfaced as CancelledError)."""
    data = os.urandom(64 * MIB)
    digest = sha256_digest(data)
    sent, hang_up = threading.Event(), threading.Event()
    cut = threading.Thread(target=cut_upload, args=(edge.url, digest, data, sent, hang_up))
    cut.start()
    partial = edge.models_dir / "ingest" / digest[7:]
    deadline = time.monotonic() + 30
    while not (partial.exists() and partial.stat().st_size > 0):  # the first client holds the write
        assert sent.wait(30) and time.monotonic() < deadline
        time.sleep(0.02)
    replies: list[httpx.Response] = []
    whole = [threading.Thread(target=lambda: replies.append(
        httpx.put(f"{edge.url}/models/blobs/{digest}", content=data, headers=OCTETS, timeout=120))) for _ in range(2)]
    for thread in whole:
        thread.start()
    time.sleep(0.3)  # both wait on the digest's lock
    hang_up.set()
    for thread in [cut, *whole]:
        thread.join(60)
    assert sorted(r.status_code for r in replies) == [200, 201], [r.text for r in replies]
    assert {r.json()["digest"] for r in replies} == {digest}
    assert (edge.models_dir / "blobs" / "sha256" / digest[7:]).read_bytes() == data
    assert ingest(edge.models_dir) == []
    log = edge.gateway_log.read_text()
    assert "Exception in ASGI application" not in log and "Traceback" not in log, log[-3000:]


async def test_a_writer_of_a_blob_the_store_holds_stops_sending_at_once(tmp_path: Path) -> None:
    """The Store answers "existed" as soon as it has the digest's lock; the Distribution's writer sees
    that (initial metadata) and stops, rather than stream the whole blob again to be thrown away."""
    data = os.urandom(64 * MIB)
    blob = Blob("application/vnd.docker.ai.gguf.v3", sha256_digest(data), len(data))
    taken = 0

    async def source() -> AsyncIterator[bytes]:
        nonlocal taken
        for taken, start in enumerate(range(0, len(data), MIB), 1):
            yield data[start : start + MIB]

    store = ServiceProcess("modelrunner.store", {"MODELRUNNER_MODELS_DIR": str(tmp_path / "models")}, tmp_path).start()
    try:
        async with store_channel(store.addr) as channel:
            client = StoreClient(channel)
            await client.write(blob, 0, source())
            assert taken == 64
            await client.write(blob, 0, source())
    finally:
        store.stop()
    assert taken < 32, f"the writer sent {taken} of 64 MiB of a blob the Store already held"
