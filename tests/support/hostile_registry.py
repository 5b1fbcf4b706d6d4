"""A hostile OCI registry: answers a real one never sends, on raw asyncio sockets (so nothing in an HTTP
library tidies them up), served from a thread on a free 127.0.0.1 port.

The repository's first segment picks the behaviour: a pull of `<host>/<mode>/m:v1` meets MODES[mode]
(`/v2/<mode>/m/manifests/v1`, `/v2/<mode>/m/blobs/<digest>`), and so does a push to it (the `push_*`
modes); whatever a mode does not take over is served as a valid model whose weights are distinct per
mode, so no pull finds them in the Store already. Every request is kept in `seen`, to count.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tests.support.registry import dmr_artifact, sha256_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
TLS_HANDSHAKE = b"\x16"  # the first byte of a TLS ClientHello
WEIGHTS_BYTES = 3 << 20  # room for a first read that breaks after 2 MiB and leaves a partial to resume


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]

    @property
    def kind(self) -> str:
        """`manifests` or `blobs`; empty for /v2/ and the token service."""
        parts = self.path.split("?", 1)[0].split("/")
        return parts[4] if len(parts) > 5 and parts[1] == "v2" else ""


def answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None, length: int | None = None) -> bytes:
    """A whole HTTP/1.1 answer, its headers as latin-1 (a hostile value is sent as is)."""
    fields = {"Content-Length": str(len(body) if length is None else length), "Connection": "close", **(headers or {})}
    head = f"HTTP/1.1 {status} Hostile\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    return head.encode("latin-1") + body


Mode = Callable[["HostileRegistry", str, Request, asyncio.StreamWriter], Awaitable[bool]]


@dataclass
class HostileRegistry:
    """Serves MODES; `drip_s` is the pause between the bytes of the `slowmanifest` mode's manifest."""

    drip_s: float = 0.5
    port: int = 0
    reads: dict[str, int] = field(default_factory=dict)  # blob reads of each mode's weights so far
    seen: list[Request] = field(default_factory=list)  # every request, in order

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> HostileRegistry:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()

        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(serve(), self._loop)
        if not ready.wait(10):
            raise TimeoutError("the hostile registry did not start")
        return self

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:  # a drip still running
                task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await reader.readexactly(1)
            if first == TLS_HANDSHAKE:  # the client's probe for https: no TLS here
                return
            head = (first + await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, path, _ = head[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
            await reader.readexactly(int(headers.get("content-length") or 0))
            self.seen.append(Request(method, path, headers))
            await self._route(self.seen[-1], writer)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client hung up, as it should on much of what is sent here
        finally:
            writer.close()

    async def _route(self, request: Request, writer: asyncio.StreamWriter) -> None:
        path = request.path.split("?", 1)[0]
        if path.rstrip("/") == "/v2":
            writer.write(answer(200, b"{}"))
        elif path.startswith("/token/"):
            writer.write(answer(200, json.dumps({"token": TOKENS[path.rsplit("/", 1)[1]]}).encode()))
        elif request.kind:
            mode = path.split("/")[2]
            handler = MODES.get(mode)
            if handler is None or not await handler(self, mode, request, writer):
                self._serve_model(mode, request, writer)
        else:
            writer.write(answer(404))

    def _serve_model(self, mode: str, request: Request, writer: asyncio.StreamWriter) -> None:
        manifest, blobs = artifact(mode)
        if request.kind == "manifests":
            writer.write(answer(200, manifest, {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": sha256_digest(manifest)}))
            return
        data = blobs.get(request.path.rsplit("/", 1)[1])
        if data is None:
            writer.write(answer(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}'))
            return
        start = int(request.headers.get("range", "bytes=0-").removeprefix("bytes=").split("-")[0])
        if start:
            writer.write(answer(206, data[start:], {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}))
        else:
            writer.write(answer(200, data))


@functools.cache
def artifact(mode: str) -> tuple[bytes, dict[str, bytes]]:
    """The valid model of `mode`: (manifest, blobs by digest)."""
    return dmr_artifact(weights(mode))


@functools.cache
def weights(mode: str) -> bytes:
    return b"GGUF" + random.Random(mode).randbytes(WEIGHTS_BYTES)


def is_weights(mode: str, request: Request) -> bool:
    return request.kind == "blobs" and request.path.endswith(sha256_digest(weights(mode)))


def of_mode(mode: str, requests: list[Request], method: str, part: str = "") -> list[Request]:
    """The `method` requests on `mode`'s repository whose path holds `part`."""
    return [r for r in requests if r.method == method and r.path.startswith(f"/v2/{mode}/m/") and part in r.path]


# -- the modes: each answers what it takes over and returns True, else False (a valid model) -----------

def document(doc: dict, content_type: str = OCI_INDEX) -> Mode:
    """A manifest request answered with `doc` (an index, unless `content_type` says otherwise)."""
    async def mode(registry: HostileRegistry, name: str, request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.kind != "manifests":
            return False
        writer.write(answer(200, json.dumps(doc).encode(), {"Content-Type": content_type}))
        return True
    return mode


def on_weights(status: int, location: Callable[[str], str] | None = None) -> Mode:
    """The weights blob answered with `status`, redirected to `location(mode)` if given."""
    async def mode(registry: HostileRegistry, name: str, request: Request, writer: asyncio.StreamWriter) -> bool:
        if not is_weights(name, request):
            return False
        writer.write(answer(status, b"hostile", {"Location": location(name)} if location else {}))
        return True
    return mode


def challenge(realm: Callable[[HostileRegistry], str]) -> Mode:
    """Every request without a token answered with a Bearer challenge naming `realm`."""
    async def mode(registry: HostileRegistry, name: str, request: Request, writer: asyncio.StreamWriter) -> bool:
        if "authorization" in request.headers:
            return False
        writer.write(answer(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {
            "WWW-Authenticate": f'Bearer realm="{realm(registry)}",service="hostile",scope="repository:m:pull"'}))
        return True
    return mode


async def status_on_manifest(registry: HostileRegistry, name: str, request: Request, writer: asyncio.StreamWriter) -> bool:
    if request.kind != "manifests":
        return False
    writer.write(answer(418, b"teapot"))
    return True


async def bad_range(registry: HostileRegistry, name: str, request: Request, writer: asyncio.StreamWriter) -> bool:
    """The weights' first read breaks after 2 MiB; the resume gets a 206 whose Content-Range starts at 0."""
    if not is_weights(name, request):
        return False
    data = weights(name)
    registry.reads[name] = registry.reads.get(name, 0) + 1
    if registry.reads[name] == 1:
        writer.write(answer(200, data[: 2 << 20], length=len(data)))
    else:
        writer.write(answer(206, data, {"Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}"}))
    return True


async def huge_size(registry: HostileRegistry, name: str, request: Request, writer: asyncio.StreamWriter) -> bool:
    """A manifest whose weights layer claims 2**64 bytes."""
    if request.kind != "manifests":
        return False
    doc = json.loads(artifact(name)[0])
    doc["layers"][0]["size"] = 2**64
    writer.write(answer(200, json.dumps(doc).encode(), {"Content-Type": OCI_MANIFEST}))
    return True


async def slow_manifest(registry: HostileRegistry, name: str, request: Request, writer: asyncio.StreamWriter) -> bool:
    """The manifest one byte every `drip_s`: each read is quick, the whole would take minutes."""
    if request.kind != "manifests":
        return False
    manifest = artifact(name)[0]
    writer.write(answer(200, headers={"Content-Type": OCI_MANIFEST}, length=len(manifest)))
    for i in range(len(manifest)):
        writer.write(manifest[i : i + 1])
        await writer.drain()
        await asyncio.sleep(registry.drip_s)
    return True


UPLOAD_UNKNOWN = b'{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"blob upload unknown to registry"}]}'


def losing_sessions(lose: Callable[[HostileRegistry, str, Request], bool]) -> Mode:
    """A push taken (and dropped: nothing is kept) but where `lose` says so: that request on an upload
    session is answered 404 BLOB_UPLOAD_UNKNOWN, as by a registry that lost the session it handed out."""
    async def mode(registry: HostileRegistry, name: str, request: Request, writer: asyncio.StreamWriter) -> bool:
        session = "/blobs/uploads/" in request.path
        if request.method == "HEAD":  # no blob is there yet
            writer.write(answer(404))
        elif request.method == "POST" and session:
            number = len(of_mode(name, registry.seen, "POST"))
            writer.write(answer(202, headers={"Location": f"/v2/{name}/m/blobs/uploads/{number}"}))
        elif session and lose(registry, name, request):
            writer.write(answer(404, UPLOAD_UNKNOWN))
        elif request.method == "PATCH" and session:
            writer.write(answer(202, headers={"Location": request.path}))
        elif request.method == "PUT":  # a blob's commit or the manifest
            writer.write(answer(201))
        else:
            return False
        return True
    return mode


ANY_DIGEST = sha256_digest(b"{}")
TOKENS = {"unicode": "t\u00e9st\u2603", "crlf": "abc\r\nX-Evil: 1"}
MODES: dict[str, Mode] = {
    # manifests and indexes with fields of the wrong JSON type
    "mtype_list": document({"schemaVersion": 2, "mediaType": ["x"], "manifests": []}),
    "idx_manifests_int": document({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": 5}),
    "idx_platform_str": document({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": ANY_DIGEST, "size": 2, "platform": "linux"}]}),
    "idx_entry_mtype_list": document({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": [OCI_MANIFEST], "digest": ANY_DIGEST, "size": 2}]}),
    "huge_size": huge_size,
    # tokens, realms and redirects that no request can be made of
    "tok_unicode": challenge(lambda r: f"http://{r.host}/token/unicode"),
    "tok_crlf": challenge(lambda r: f"http://{r.host}/token/crlf"),
    "realm_badurl": challenge(lambda r: "http://[::1"),
    "realm_badport": challenge(lambda r: "http://127.0.0.1:99999/token"),
    "redir_badport": on_weights(307, lambda m: "http://127.0.0.1:99999/blob"),
    "redir_badurl": on_weights(307, lambda m: "http://[::1/blob"),
    "redir_badipv6": on_weights(307, lambda m: "http://[zz::1]/blob"),
    "redir_loop": on_weights(302, lambda m: f"/v2/{m}/m/blobs/{sha256_digest(weights(m))}"),
    # statuses and ranges a registry should not answer
    "status418": status_on_manifest,
    "blob418": on_weights(418),
    "badrange": bad_range,
    # a manifest dripped a byte at a time
    "slowmanifest": slow_manifest,
    # pushes whose upload sessions the registry loses: each PATCH, each commit, or the first PATCH only
    "push_lose_patch": losing_sessions(lambda r, m, request: request.method == "PATCH"),
    "push_lose_commit": losing_sessions(lambda r, m, request: request.method == "PUT"),
    "push_lose_once": losing_sessions(lambda r, m, request: of_mode(m, r.seen, "PATCH")[0] is request),
}
