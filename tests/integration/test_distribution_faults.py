"""Pulls that meet trouble, and registries that want credentials.

A small HTTP proxy in front of docker-registry lets a test see every blob request (its Range and
the bytes sent), flip a byte of a served blob, kill the registry in the middle of a download, or drop
a connection in the middle of an upload's PATCH.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import subprocess
from urllib.parse import parse_qs, urlsplit

import grpc
import httpx
import pytest

from modelrunner.v1 import distribution_pb2, distribution_pb2_grpc, store_pb2, store_pb2_grpc
from tests.integration.test_distribution_pull_push import SKOPEO, file_digest, resolve
from tests.support.registry import Registry, Stack, dmr_artifact, package_and_push, pull, sha256_digest, upload
from tests.support.tiny_gguf import write_tiny_gguf

CHUNK = 1 << 20


@dataclass
class BlobRequest:
    range_start: int
    sent: int = 0


@dataclass
class Exchange:
    """One request through the proxy: `forwarded` body bytes reached the registry; status 0: dropped."""

    method: str
    path: str
    headers: dict[str, str]
    forwarded: int = 0
    status: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Proxy:
    """HTTP/1.1 in front of the registry, one upstream connection per request (Connection: close).

    `tamper(path, offset, data)` may change the bytes of a response body on their way to the client.
    `cut(method, path, headers)` may return how many bytes of the request body (read whole from the
    client) to pass on before the proxy drops both connections, the client's without an answer.
    Every request is logged in `exchanges`.
    """

    upstream: int
    tamper: Callable[[str, int, bytes], bytes] = lambda path, offset, data: data
    cut: Callable[[str, str, dict[str, str]], int | None] = lambda method, path, headers: None
    blob_requests: dict[str, list[BlobRequest]] = field(default_factory=dict)
    exchanges: list[Exchange] = field(default_factory=list)
    port: int = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            kept = [line for line in lines[1:] if line and not line.lower().startswith("connection:")]
            exchange = Exchange(method, path, headers)
            self.exchanges.append(exchange)
            cut = self.cut(method, path, headers)
            if cut == 0:
                return  # the registry never sees this request
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
            except OSError:
                return  # registry down: the client sees the connection close
            request_head = ("\r\n".join([lines[0], *kept, "Connection: close"]) + "\r\n\r\n").encode("latin-1")
            if cut is not None:
                up_writer.write(request_head + body[:cut])
                await up_writer.drain()
                exchange.forwarded = min(cut, len(body))
                await asyncio.sleep(0.2)  # the registry stores what it got
                up_writer.close()
                return
            up_writer.write(request_head + body)
            await up_writer.drain()
            exchange.forwarded = len(body)
            response_head = await up_reader.readuntil(b"\r\n\r\n")
            status_line, *response_lines = response_head.decode("latin-1").split("\r\n")
            exchange.status = int(status_line.split(" ", 2)[1])
            exchange.response_headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in response_lines if x)}
            writer.write(response_head)
            record = None
            if method == "GET" and "/blobs/sha256:" in path:
                start = int(headers.get("range", "bytes=0-").removeprefix("bytes=").split("-")[0])
                record = BlobRequest(start)
                self.blob_requests.setdefault(path.rsplit("/", 1)[-1], []).append(record)
            offset = 0
            while data := await up_reader.read(256 * 1024):
                data = self.tamper(path, offset, data)
                offset += len(data)
                if record is not None:
                    record.sent += len(data)
                writer.write(data)
                await writer.drain()
            up_writer.close()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack.start(tmp_path)
    yield stack
    stack.stop()


async def list_models(stack: Stack) -> list:
    async with grpc.aio.insecure_channel(stack.store.addr) as channel:
        return list((await store_pb2_grpc.StoreStub(channel).ListModels(store_pb2.ListModelsRequest())).models)


async def test_flipped_byte_is_rejected_and_nothing_committed(registry: Registry, stack: Stack, tiny_gguf: Path) -> None:
    gguf = tiny_gguf.read_bytes()
    manifest, blobs = dmr_artifact(gguf)
    upload(registry.url, "ai/tiny", "v1", manifest, blobs)
    target = sha256_digest(gguf)

    def flip(path: str, offset: int, data: bytes) -> bytes:
        if path.endswith(target) and offset <= 1000 < offset + len(data):
            i = 1000 - offset
            return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
        return data

    proxy = Proxy(registry.port, flip)
    await proxy.start()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await pull(stack, f"{proxy.host}/ai/tiny:v1")
    finally:
        await proxy.stop()
    assert error.value.code() == grpc.StatusCode.DATA_LOSS
    assert target in error.value.details() and "nothing was committed" in error.value.details()
    assert await list_models(stack) == []
    hex_digest = target.removeprefix("sha256:")
    assert not (stack.models_dir / "blobs" / "sha256" / hex_digest).exists()
    assert not any(p.name == hex_digest for p in (stack.models_dir / "ingest").glob("*"))


@pytest.mark.slow
async def test_registry_killed_mid_pull_resumes(registry: Registry, stack: Stack) -> None:
    weights = os.urandom(64 * CHUNK)
    manifest, blobs = dmr_artifact(weights)
    model_id = upload(registry.url, "ai/big", "v1", manifest, blobs)
    target = sha256_digest(weights)
    killed_at: list[int] = []

    def kill_midway(path: str, offset: int, data: bytes) -> bytes:
        if path.endswith(target) and not killed_at and offset >= 24 * CHUNK:
            killed_at.append(offset)
            registry.kill()
            threading.Timer(1.0, registry.start).start()
        return data

    proxy = Proxy(registry.port, kill_midway)
    await proxy.start()
    try:
        messages = await pull(stack, f"{proxy.host}/ai/big:v1")
    finally:
        await proxy.stop()
    assert messages[-1].type == "success" and messages[-1].model_id == model_id
    assert killed_at
    requests = proxy.blob_requests[target]
    assert len(requests) >= 2 and requests[0].range_start == 0
    resumed = next(r for r in requests[1:] if r.sent)
    refetched = requests[0].sent - resumed.range_start
    print(f"registry killed after {requests[0].sent} bytes; resumed at {resumed.range_start}; re-fetched {refetched}")
    assert 0 < resumed.range_start <= requests[0].sent
    assert refetched <= 8 * CHUNK  # what was in flight between the proxy, the Distribution and the Store
    assert resumed.range_start + resumed.sent == len(weights)


# -- push ----------------------------------------------------------------------------------------

def upload_session(exchange: Exchange) -> str | None:
    """The upload session (uuid) a request of a chunked upload belongs to."""
    if "/blobs/uploads/" not in exchange.path:
        return None
    return exchange.path.split("/blobs/uploads/", 1)[1].split("?", 1)[0] or None


@pytest.mark.parametrize("kept", [0, CHUNK], ids=["registry-got-none", "registry-kept-part"])
async def test_connection_dropped_mid_push_resumes(registry: Registry, tmp_path: Path, kept: int) -> None:
    """A push whose GGUF spans 6 PATCHes of 4 MiB loses its connection in the third, after the proxy
    passed on `kept` bytes of it; no tag shows meanwhile, and the push then completes, intact.

    With nothing kept, the upload resumes at the offset the registry reports: every byte reached it
    once. With part kept, docker-registry refuses that session from then on (the offset signed into its
    upload URL no longer matches what it holds): the GGUF is sent again, once, in a new session."""
    chunk = 4 * CHUNK
    gguf = write_tiny_gguf(tmp_path / "big.gguf", n_embd=512)
    size = gguf.stat().st_size
    assert 5 * chunk < size < 6 * chunk
    tags_at_break: list[httpx.Response] = []

    def drop_third_patch(method: str, path: str, headers: dict[str, str]) -> int | None:
        if method == "PATCH" and headers.get("content-range", "").startswith(f"{2 * chunk}-") and not tags_at_break:
            tags_at_break.append(httpx.get(f"{registry.url}/v2/team/model/tags/list"))
            return kept
        return None

    proxy = Proxy(registry.port, cut=drop_third_patch)
    await proxy.start()
    stack = Stack.start(tmp_path / "a", {"MODELRUNNER_UPLOAD_CHUNK_SIZE": str(chunk)})
    try:
        messages = await package_and_push(stack, gguf, f"{proxy.host}/team/model:v1")
    finally:
        stack.stop()
        await proxy.stop()
    assert messages[-1].type == "success"
    model_id = messages[-1].model_id

    # Nothing half-pushed: no tag at the break; the manifest went up once, after every blob's commit.
    assert tags_at_break[0].status_code == 404 or not tags_at_break[0].json().get("tags")
    log = proxy.exchanges
    commits = {i: e for i, e in enumerate(log) if e.method == "PUT" and upload_session(e)}
    manifests = [i for i, e in enumerate(log) if e.method == "PUT" and "/manifests/" in e.path]
    assert len(manifests) == 1 and manifests[0] > max(commits) and log[manifests[0]].status == 201

    # No byte sent twice to a session the registry kept.
    gguf_digest = file_digest(gguf)
    committed = {
        parse_qs(urlsplit(e.path).query)["digest"][0]: upload_session(e) for e in commits.values() if e.status == 201
    }
    broken = next(i for i, e in enumerate(log) if e.method == "PATCH" and e.status == 0)
    lost, final = upload_session(log[broken]), committed[gguf_digest]
    status = next(e for e in log[broken:] if e.method == "GET" and upload_session(e) == lost)

    def patches(session: str | None) -> list[tuple[int, int]]:
        return [(int(e.headers["content-range"].split("-")[0]), e.forwarded)
                for e in log if e.method == "PATCH" and upload_session(e) == session]

    starts = [start for start, _ in patches(final)]
    print(f"kept {kept}: status {status.status} {status.response_headers.get('range')}; PATCH starts {starts}; "
          f"GGUF bytes through the proxy {sum(n for s in {lost, final} for _, n in patches(s))} of {size}")
    assert log[broken].forwarded == kept
    if not kept:
        assert final == lost
        assert status.status == 204 and status.response_headers["range"] == f"0-{2 * chunk - 1}"
        assert starts == [0, chunk, 2 * chunk, 2 * chunk, 3 * chunk, 4 * chunk, 5 * chunk]
    else:
        assert status.status == 404 and final != lost and lost not in committed.values()
        assert sum(n for _, n in patches(lost)) == 2 * chunk + kept
        assert starts == [0, chunk, 2 * chunk, 3 * chunk, 4 * chunk, 5 * chunk]
    assert sum(n for _, n in patches(final)) == size

    # Intact: skopeo reads the same manifest; a fresh pull into another Store gives the same GGUF.
    name = f"{registry.host}/team/model:v1"
    raw = subprocess.run([SKOPEO, "inspect", "--raw", "--tls-verify=false", f"docker://{name}"],
                         check=True, capture_output=True).stdout
    assert sha256_digest(raw) == model_id
    assert [(layer["digest"], layer["size"]) for layer in json.loads(raw)["layers"]][0] == (gguf_digest, size)
    second = Stack.start(tmp_path / "b")
    try:
        assert (await pull(second, name))[-1].model_id == model_id
        assert [file_digest(p) for p in (await resolve(second, name)).gguf_paths] == [gguf_digest]
    finally:
        second.stop()


# -- auth ----------------------------------------------------------------------------------------

def logs(stack: Stack) -> str:
    return stack.distribution.log.read_text() + stack.store.log.read_text()


async def test_basic_auth_from_docker_config(tmp_path: Path, tiny_gguf: Path) -> None:
    with Registry("basic") as registry:
        config_dir = tmp_path / "docker"
        config_dir.mkdir()
        auth = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
        (config_dir / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))
        stack = Stack.start(tmp_path / "ok", {"DOCKER_CONFIG": str(config_dir)})
        try:
            name = f"{registry.host}/team/model:v1"
            assert (await package_and_push(stack, tiny_gguf, name))[-1].type == "success"
            assert (await pull(stack, name))[-1].type == "success"
        finally:
            stack.stop()
        anonymous = Stack.start(tmp_path / "anon", {"DOCKER_CONFIG": str(tmp_path / "none")})
        try:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await pull(anonymous, name)
        finally:
            anonymous.stop()
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "docker login" in error.value.details() and "MODELRUNNER_REGISTRY_USERNAME" in error.value.details()


async def test_token_auth_push_asks_for_push_scope(tmp_path: Path, tiny_gguf: Path) -> None:
    with Registry("token") as registry:
        env = {"MODELRUNNER_REGISTRY_USERNAME": registry.username, "MODELRUNNER_REGISTRY_PASSWORD": registry.password,
               "MODELRUNNER_REGISTRY_HOST": registry.host}
        stack = Stack.start(tmp_path / "ok", env)
        try:
            name = f"{registry.host}/team/model:v1"
            assert (await package_and_push(stack, tiny_gguf, name))[-1].type == "success"
            async with grpc.aio.insecure_channel(stack.distribution.addr) as channel:
                model = await distribution_pb2_grpc.DistributionStub(channel).GetRemoteModel(
                    distribution_pb2.GetRemoteModelRequest(reference=name)
                )
            assert model.config.architecture == "llama"
        finally:
            stack.stop()
        scopes = [s for r in registry.token_server.requests for s in r["scopes"]]
        assert "repository:team/model:pull,push" in scopes and "repository:team/model:pull" in scopes
        assert registry.password not in logs(stack)

        wrong = {**env, "MODELRUNNER_REGISTRY_PASSWORD": "wrong-password-123"}
        bad = Stack.start(tmp_path / "bad", wrong)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await pull(bad, name)
        finally:
            bad.stop()
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "wrong-password-123" not in error.value.details() and "wrong-password-123" not in logs(bad)
        assert registry.username in error.value.details()
