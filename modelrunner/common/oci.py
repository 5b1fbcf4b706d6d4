"""OCI content descriptors and image manifests: parsed, validated and rendered.

The Store validates every manifest it commits and renders the ones it packages; the Distribution
parses what registries send. Both use these types, so a manifest means the same thing on each side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from modelrunner.common import media_types
from modelrunner.common.errors import invalid
from modelrunner.common.names import DIGEST_RE

MANIFEST_TYPES = (media_types.OCI_MANIFEST, media_types.DOCKER_MANIFEST)


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


def parse_descriptor(value: object, where: str) -> Blob:
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
        parse_descriptor(doc.get("config"), "config"),
        tuple(parse_descriptor(layer, f"layer {i}") for i, layer in enumerate(layers)),
    )


def render_manifest(config: Blob, layers: list[Blob]) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": media_types.OCI_MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    return json.dumps(doc, indent=2).encode()
