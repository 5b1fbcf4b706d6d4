"""Model manifests: which manifest of an index to pull, and whether we can store what it describes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import grpc

from modelrunner.common import media_types as mt
from modelrunner.common.errors import ServiceError
from modelrunner.common.names import is_digest
from modelrunner.common.oci import MANIFEST_TYPES, Manifest, parse_manifest
from modelrunner.distribution.bodies import MAX_MANIFEST_BYTES, limit_text

MANIFESTS = set(MANIFEST_TYPES)
INDEXES = {mt.OCI_INDEX, mt.DOCKER_MANIFEST_LIST}
MODEL_LAYERS = {mt.GGUF, mt.LICENSE, mt.MMPROJ, mt.CHAT_TEMPLATE, mt.SAFETENSORS, mt.DIR_TAR}
MAX_BLOB_BYTES = 1 << 50  # 1 PiB, past any model: a size near 2**64 is a registry's nonsense, not a layer
JSON_TYPES = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array", dict: "an object"}


@dataclass(frozen=True)
class ModelManifest(Manifest):
    """A model's manifest as the registry serves it: the raw bytes are what the Store commits."""

    raw: bytes = b""
    digest: str = ""

    @property
    def total(self) -> int:
        return sum(b.size for b in self.blobs)


def _json(raw: bytes, what: str) -> dict:
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ServiceError(
            grpc.StatusCode.FAILED_PRECONDITION, f"{what}: the manifest is over the limit of {limit_text(MAX_MANIFEST_BYTES)}"
        )
    try:
        doc = json.loads(raw)
    except ValueError:
        raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, f"{what}: the manifest is not JSON") from None
    if not isinstance(doc, dict):
        raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, f"{what}: the manifest is not a JSON object")
    return doc


def _field(doc: dict, name: str, kind: type, what: str) -> Any:
    """`doc[name]`, None when absent; INVALID_ARGUMENT naming the field when it is not of `kind`, so a
    registry's nonsense (a list for a mediaType) is an answer, not a TypeError deep in the pull."""
    value = doc.get(name)
    if value is None or (isinstance(value, kind) and not isinstance(value, bool)):
        return value
    raise ServiceError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{what}: {name} is {JSON_TYPES.get(type(value), type(value).__name__)}, expected {JSON_TYPES[kind]}",
    )


def _index_entry(entry: object, what: str) -> dict:
    """An index entry whose fields have the types the OCI spec gives them."""
    if not isinstance(entry, dict):
        raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, f"{what} is not an object")
    for name, kind in (("mediaType", str), ("digest", str), ("platform", dict), ("size", int)):
        _field(entry, name, kind, what)
    _check_size(entry.get("size") or 0, what)
    return entry


def _check_size(size: int, what: str) -> None:
    """A descriptor's size within MAX_BLOB_BYTES (a size of 2**64 would pass as an int and show as absurd progress)."""
    if not 0 <= size <= MAX_BLOB_BYTES:
        raise ServiceError(
            grpc.StatusCode.INVALID_ARGUMENT, f"{what} has size {size}, outside 0 to {MAX_BLOB_BYTES} bytes (1 PiB)"
        )


def media_type_of(raw: bytes, header: str, what: str) -> str:
    """The manifest's own mediaType, else the Content-Type the registry sent."""
    return _field(_json(raw, what), "mediaType", str, what) or header


def pick_from_index(raw: bytes, what: str) -> str:
    """The digest to pull from an index: linux/amd64, else the first entry that is a manifest."""
    index = _json(raw, what)
    entries = [_index_entry(m, f"{what}: manifests[{i}]") for i, m in enumerate(_field(index, "manifests", list, what) or [])]
    candidates = [m for m in entries if m.get("mediaType", mt.OCI_MANIFEST) in MANIFESTS and is_digest(str(m.get("digest")))]
    for entry in candidates:
        platform = entry.get("platform") or {}
        if platform.get("os") == "linux" and platform.get("architecture") == "amd64":
            return entry["digest"]
    if not candidates:
        found = sorted({str(m.get("mediaType")) for m in entries}) or ["no entries"]
        raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, f"{what}: the index lists no model manifest (found {', '.join(found)})")
    return candidates[0]["digest"]


def parse_model_manifest(raw: bytes, digest: str, what: str) -> ModelManifest:
    """Validates a manifest as a Docker Model Runner model; the error names the media types found."""
    _json(raw, what)  # the size limit, and errors that name the model
    try:
        parsed = parse_manifest(raw)
    except ServiceError as exc:
        raise ServiceError(exc.code, f"{what}: {exc.message}") from None
    config, layers = parsed.config, parsed.layers
    for where, blob in (("config", config), *((f"layer {i}", layer) for i, layer in enumerate(layers))):
        _check_size(blob.size, f"{what}: {where} ({blob.digest})")
    if config.media_type != mt.MODEL_CONFIG:
        raise ServiceError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{what} is not a model: its config is {config.media_type or 'untyped'}, expected {mt.MODEL_CONFIG} "
            "(is it a container image?)",
        )
    unknown = sorted({layer.media_type for layer in layers if layer.media_type not in MODEL_LAYERS})
    if unknown:
        raise ServiceError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{what} has layers of unsupported media types {', '.join(unknown)}; supported: {', '.join(sorted(MODEL_LAYERS))}",
        )
    if not any(layer.media_type in (mt.GGUF, mt.SAFETENSORS, mt.DIR_TAR) for layer in layers):
        raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, f"{what} has no weights layer ({mt.GGUF})")
    return ModelManifest(parsed.media_type, config, layers, raw=raw, digest=digest)
