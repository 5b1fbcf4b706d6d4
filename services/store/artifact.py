"""Model artifacts in Docker Model Runner's format: manifests parsed and validated, configs built.

A manifest is an OCI image manifest whose config is `application/vnd.docker.ai.model.config.v0.1+json`
(`{"config": {...}, "descriptor": {"created"}, "rootfs": {"diff_ids"}}`) and whose layers are the
GGUF weights (one per shard), and optionally a license, a chat template and a multimodal projector.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from modelrunner.common import media_types
from modelrunner.common.errors import invalid
from modelrunner.common.gguf_info import GGUFInfo, human_size
from modelrunner.common.names import DIGEST_RE

MANIFEST_TYPES = (media_types.OCI_MANIFEST, media_types.DOCKER_MANIFEST)
TITLE = "org.opencontainers.image.title"
_SHARD_RE = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")


@dataclass(frozen=True)
class Blob:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        out: dict = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Blob
    layers: tuple[Blob, ...]

    @property
    def blobs(self) -> tuple[Blob, ...]:
        return (self.config, *self.layers)

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)

    def layers_of(self, media_type: str) -> list[Blob]:
        return [layer for layer in self.layers if layer.media_type == media_type]


def _descriptor(value: object, where: str) -> Blob:
    if not isinstance(value, dict):
        raise invalid(f"manifest {where} is not a descriptor object")
    digest, size, media_type = value.get("digest"), value.get("size"), value.get("mediaType")
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise invalid(f"manifest {where} has an invalid digest {digest!r}: expected sha256:<64 hex>")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise invalid(f"manifest {where} ({digest}) has an invalid size {size!r}")
    if not isinstance(media_type, str) or not media_type:
        raise invalid(f"manifest {where} ({digest}) has no mediaType")
    annotations = value.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise invalid(f"manifest {where} ({digest}) has annotations that are not an object")
    return Blob(media_type, digest, size, {str(k): str(v) for k, v in annotations.items()})


def parse_manifest(raw: bytes) -> Manifest:
    """Parses and validates raw manifest bytes; INVALID_ARGUMENT says what is wrong."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise invalid("manifest is not a JSON object")
    if doc.get("schemaVersion") != 2:
        raise invalid(f"manifest schemaVersion is {doc.get('schemaVersion')!r}, expected 2")
    media_type = doc.get("mediaType", media_types.OCI_MANIFEST)
    if media_type not in MANIFEST_TYPES:
        raise invalid(f"manifest media type {media_type!r} is not one of {', '.join(MANIFEST_TYPES)}")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise invalid("manifest has no layers array")
    return Manifest(
        media_type,
        _descriptor(doc.get("config"), "config"),
        tuple(_descriptor(layer, f"layer {i}") for i, layer in enumerate(layers)),
    )


def render_manifest(config: Blob, layers: list[Blob]) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": media_types.OCI_MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    return json.dumps(doc, indent=2).encode()


def build_config(info: GGUFInfo, gguf_layers: list[Blob], context_size: int, created: datetime) -> bytes:
    """The model config of a packaged GGUF; `context_size` 0 means the trained context length."""
    config: dict = {
        "format": "gguf",
        "quantization": info.quantization,
        "parameters": info.parameters_text,
        "architecture": info.architecture,
        "size": human_size(sum(layer.size for layer in gguf_layers)),
        "gguf": info.metadata,
    }
    if context_size or info.context_length:
        config["context_size"] = context_size or info.context_length
    doc = {
        "config": config,
        "descriptor": {"created": created.astimezone(UTC).isoformat().replace("+00:00", "Z")},
        "rootfs": {"type": "rootfs", "diff_ids": [layer.digest for layer in gguf_layers]},
    }
    return json.dumps(doc, indent=2).encode()


def shard_paths(first: Path) -> list[Path]:
    """All shards of a sharded GGUF (`name-00001-of-00003.gguf`), in order; else just `first`."""
    m = _SHARD_RE.match(first.name)
    if not m:
        return [first]
    count = int(m["count"])
    if int(m["index"]) != 1:
        raise invalid(f"{first.name} is shard {int(m['index'])} of {count}: give the first shard")
    paths = [first.with_name(f"{m['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise invalid(f"shards missing next to {first.name}: {', '.join(missing)}")
    return paths
