"""Packaging a local GGUF for tests, as `modelrunner package` does: the files are uploaded (the Store
opens no path a client names), then PackageModel names their blobs. Over REST (`PUT
/models/blobs/{digest}`, then `POST /models/package`) or over gRPC straight to the Store."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx

from modelrunner.store.upload import file_digest, package_files
from modelrunner.v1 import store_pb2_grpc


def package(target: str, gguf: Path, name: str, timeout: float = 120) -> None:
    """Packages `gguf` as `name` through `target`: a gateway URL (http://...) or a Store address (host:port)."""
    if target.startswith(("http://", "https://")):
        reply = package_over_http(target, Path(gguf), name, timeout=timeout)
        assert reply.status_code == 200, reply.text
        return
    with grpc.insecure_channel(target) as channel:
        package_files(store_pb2_grpc.StoreStub(channel), [Path(gguf)], name, timeout=timeout)


def upload(base_url: str, path: Path, headers: dict[str, str] | None = None, timeout: float = 60) -> dict:
    """Uploads `path` through the gateway; returns its PackageFile as JSON ({"digest", "name"})."""
    digest = file_digest(path)
    with path.open("rb") as body:
        reply = httpx.put(f"{base_url}/models/blobs/{digest}", content=body, timeout=timeout,
                          headers={**(headers or {}), "Content-Type": "application/octet-stream"})
    assert reply.status_code in (200, 201), reply.text
    return {"digest": digest, "name": path.name}


def package_over_http(
    base_url: str, gguf: Path, name: str, headers: dict[str, str] | None = None, timeout: float = 60, **fields: object
) -> httpx.Response:
    """Uploads `gguf` and answers `POST /models/package` for it (`fields`: context_size, license, ...)."""
    body = {"name": name, "gguf": [upload(base_url, gguf, headers, timeout)], **fields}
    return httpx.post(f"{base_url}/models/package", json=body, headers=headers, timeout=timeout)
