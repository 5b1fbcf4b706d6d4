"""PackageModel: a local GGUF (and optional license and chat template) made into a model artifact.

Each file is copied in as a blob in one pass that hashes while it copies; the config is filled from
the GGUF header, so the model lists with its architecture, quantization and context length.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from modelrunner.common.oci import Blob, render_manifest
from modelrunner.store.artifact import TITLE, build_config, shard_paths
from modelrunner.store.models import ModelStore

from modelrunner.common import media_types
from modelrunner.common.errors import invalid, not_found
from modelrunner.common.gguf_info import read_gguf_info


def _local_file(text: str, what: str) -> Path:
    if "\0" in text:
        raise invalid(f"{what} path contains a NUL character")
    path = Path(text)
    if not path.is_absolute():
        raise invalid(f"{what} path {text!r} must be absolute (the Store resolves no relative paths)")
    if not path.exists():
        raise not_found(f"{what} {text} does not exist on the Store's host")
    if not path.is_file():
        raise invalid(f"{what} {text} is not a regular file")
    return path


def _magic(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(4)


async def package(
    store: ModelStore,
    gguf_path: str,
    name: str,
    *,
    license_path: str = "",
    chat_template_path: str = "",
    context_size: int = 0,
) -> str:
    """Packages the files as the model `name`; returns the model id."""
    tag = store.tag_name(name)
    if context_size < 0:
        raise invalid(f"context_size {context_size} must be positive (or 0 for the trained length)")
    shards = shard_paths(_local_file(gguf_path, "GGUF file"))
    extras = [
        (_local_file(text, what), media_type)
        for text, what, media_type in (
            (license_path, "license file", media_types.LICENSE),
            (chat_template_path, "chat template file", media_types.CHAT_TEMPLATE),
        )
        if text
    ]
    if await asyncio.to_thread(_magic, shards[0]) != b"GGUF":
        raise invalid(f"{gguf_path} is not a GGUF file (it does not start with the GGUF magic)")

    async def gguf_info():
        try:
            return await asyncio.to_thread(read_gguf_info, shards[0])
        except ValueError as exc:
            raise invalid(str(exc)) from None

    async def layer(path: Path, media_type: str) -> Blob:
        written = await store.blobs.import_file(path)
        return Blob(media_type, written.digest, written.size, {TITLE: path.name})

    async def gguf_layers_in_order() -> list[Blob]:
        return [await layer(p, media_types.GGUF) for p in shards]

    # The header is read while the weights are copied in; should the header be malformed, the call
    # fails and the blob copied meanwhile is left unreferenced, for Prune.
    info, gguf_layers = await asyncio.gather(gguf_info(), gguf_layers_in_order())
    layers = [*gguf_layers, *[await layer(path, media_type) for path, media_type in extras]]
    config_bytes = build_config(info, gguf_layers, context_size, datetime.now(UTC))
    config = Blob(media_types.MODEL_CONFIG, await store.blobs.put_bytes(config_bytes), len(config_bytes))
    return await store.put_manifest(render_manifest(config, layers), [tag])
