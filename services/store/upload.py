"""The client side of packaging over gRPC: stream local files into the Store as blobs, then package them.

For callers that talk to the Store directly (the launcher's default model, tests); the `modelrunner`
command does the same through the gateway's `PUT /models/blobs/{digest}`. The Store opens no path a
client names, so this works wherever the Store runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from modelrunner.v1 import store_pb2, store_pb2_grpc, types_pb2

CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(CHUNK):
            h.update(data)
    return "sha256:" + h.hexdigest()


def _messages(path: Path, digest: str, size: int) -> Iterator[store_pb2.WriteBlobRequest]:
    yield store_pb2.WriteBlobRequest(header=store_pb2.BlobHeader(digest=digest, size=size, offset=0))
    with open(path, "rb") as f:
        while data := f.read(CHUNK):
            yield store_pb2.WriteBlobRequest(data=data)


def write_file(store: store_pb2_grpc.StoreStub, path: Path, timeout: float) -> store_pb2.PackageFile:
    """Uploads `path` as a blob (nothing is sent twice: the Store answers `existed` for a known blob)."""
    digest = file_digest(path)
    store.WriteBlob(_messages(path, digest, path.stat().st_size), timeout=timeout)
    return store_pb2.PackageFile(digest=digest, name=path.name)


def package_files(
    store: store_pb2_grpc.StoreStub,
    gguf: list[Path],
    name: str,
    *,
    license_file: Path | None = None,
    chat_template: Path | None = None,
    context_size: int = 0,
    timeout: float = 600.0,
) -> types_pb2.Model:
    """Uploads the files and packages them as the model `name` (the GGUF's shards in order)."""
    request = store_pb2.PackageModelRequest(
        name=name, context_size=context_size, gguf=[write_file(store, p, timeout) for p in gguf]
    )
    if license_file is not None:
        request.license.CopyFrom(write_file(store, license_file, timeout))
    if chat_template is not None:
        request.chat_template.CopyFrom(write_file(store, chat_template, timeout))
    return store.PackageModel(request, timeout=timeout)
