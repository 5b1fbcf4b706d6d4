"""Model artifacts in Docker Model Runner's format: the config of a packaged GGUF, and its shards.

A manifest is an OCI image manifest whose config is `application/vnd.docker.ai.model.config.v0.1+json`
(`{"config": {...}, "descriptor": {"created"}, "rootfs": {"diff_ids"}}`) and whose layers are the
GGUF weights (one per shard), and optionally a license, a chat template and a multimodal projector.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

from modelrunner.common.errors import invalid
from modelrunner.common.gguf_info import GGUFInfo, human_size
from modelrunner.common.oci import Blob

TITLE = "org.opencontainers.image.title"
_SHARD_RE = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")


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
