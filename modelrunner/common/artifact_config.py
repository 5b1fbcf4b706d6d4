"""A model artifact's config JSON (Docker Model Runner's format) as the protos carry it.

The Store reads it from its blobs and the Distribution from a registry; both show a model the same way.
"""

from __future__ import annotations

from datetime import datetime

from modelrunner.v1 import types_pb2


def model_config(config: dict) -> types_pb2.ModelConfig:
    c = config.get("config") or {}
    try:
        context_size = int(c.get("context_size") or 0)
    except (TypeError, ValueError):
        context_size = 0
    return types_pb2.ModelConfig(
        format=str(c.get("format", "")),
        quantization=str(c.get("quantization", "")),
        parameters=str(c.get("parameters", "")),
        architecture=str(c.get("architecture", "")),
        size=str(c.get("size", "")),
        context_size=min(context_size, 2**31 - 1),
        gguf={str(k): str(v) for k, v in (c.get("gguf") or {}).items()},
    )


def parse_created(config: dict) -> float:
    """Whole unix seconds of the config's `descriptor.created` (0 when absent or unreadable), as
    Docker Model Runner shows `created`."""
    text = (config.get("descriptor") or {}).get("created")
    if not isinstance(text, str):
        return 0.0
    try:
        return float(int(datetime.fromisoformat(text).timestamp()))
    except ValueError:
        return 0.0
