"""PackageModel: blobs the Store holds (a GGUF, an optional license and chat template) made into a model.

The client uploads each file first (WriteBlob, or the gateway's `PUT /models/blobs/{digest}`) and names
the blobs by digest: the Store never opens a path a client chose (a web page once made /etc/shadow a
model blob that way), and packaging works where the Store cannot see the client's files (compose,
Kubernetes). The config is filled from the GGUF header, so the model lists with its architecture,
quantization and context length.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from modelrunner.common import media_types
from modelrunner.common.errors import invalid, not_found
from modelrunner.common.gguf_info import GGUFInfo, read_gguf_info
from modelrunner.common.names import is_digest
from modelrunner.common.oci import Blob, render_manifest
from modelrunner.store.artifact import TITLE, build_config
from modelrunner.store.models import ModelStore
from modelrunner.v1 import store_pb2

UPLOAD_HINT = "upload it first (WriteBlob, or PUT /models/blobs/{digest} on the gateway)"


def _layer(store: ModelStore, file: store_pb2.PackageFile, field: str, media_type: str) -> Blob:
    """The layer of an uploaded blob; the error names the request field to fix."""
    if not is_digest(file.digest):
        raise invalid(f"{field}.digest {file.digest!r} must be sha256:<64 hex digits> of an uploaded blob")
    name = file.name or Path(field).name
    if "/" in name or "\\" in name or "\0" in name or name in (".", ".."):
        raise invalid(f"{field}.name {file.name!r} must be a plain file name, without directories")
    stat = store.blobs.stat(file.digest)
    if not stat.exists:
        raise not_found(f"{field}: the Store holds no blob {file.digest}: {UPLOAD_HINT}")
    return Blob(media_type, file.digest, stat.size, {TITLE: name})


def _magic(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(4)


def _check_weights(info: GGUFInfo, title: str, file_size: int) -> None:
    """A header alone is not a model: llama.cpp would refuse it at every load, long after packaging."""
    if not info.parameters:
        raise invalid(f"gguf[0] ({title}) declares no tensors: it holds metadata only, not a model's weights")
    if info.data_end > file_size:
        raise invalid(
            f"gguf[0] ({title}) is truncated: its tensors need {info.data_end} bytes but the file has {file_size};"
            " download it again"
        )


async def package(store: ModelStore, request: store_pb2.PackageModelRequest) -> str:
    """Packages the request's blobs as the model `request.name`; returns the model id."""
    tag = store.tag_name(request.name)
    if request.context_size < 0:
        raise invalid(f"context_size {request.context_size} must be positive (or 0 for the trained length)")
    if not request.gguf:
        raise invalid(f"gguf: give the GGUF file's blob (digest and name); {UPLOAD_HINT}")
    gguf_layers = [_layer(store, f, f"gguf[{i}]", media_types.GGUF) for i, f in enumerate(request.gguf)]
    extras = [
        _layer(store, getattr(request, field), field, media_type)
        for field, media_type in (("license", media_types.LICENSE), ("chat_template", media_types.CHAT_TEMPLATE))
        if request.HasField(field)
    ]
    first = store.blob_path(gguf_layers[0].digest)
    if await asyncio.to_thread(_magic, first) != b"GGUF":
        title = gguf_layers[0].annotations[TITLE]
        raise invalid(f"gguf[0] ({title}) is not a GGUF file (it does not start with the GGUF magic)")
    try:
        info = await asyncio.to_thread(read_gguf_info, Path(first))
    except ValueError as exc:
        raise invalid(f"gguf[0]: {exc}") from None
    _check_weights(info, gguf_layers[0].annotations[TITLE], gguf_layers[0].size)
    config_bytes = build_config(info, gguf_layers, request.context_size, datetime.now(UTC))
    config = Blob(media_types.MODEL_CONFIG, await store.blobs.put_bytes(config_bytes), len(config_bytes))
    return await store.put_manifest(render_manifest(config, [*gguf_layers, *extras]), [tag])
