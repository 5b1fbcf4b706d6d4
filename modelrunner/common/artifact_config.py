"""A model artifact's config JSON (Docker Model Runner's format) as the protos carry it.

The Store reads it from its blobs and the Distribution from a registry; both show a model the same way.
Reading is total: a field of the wrong type reads as empty (a model whose config was committed before
the Store checked it must still list), and `config_problem` names that field so the Store can refuse
such a config before committing it. A field that is null reads as absent, as in Docker Model Runner.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

from modelrunner.v1 import types_pb2

TEXT_FIELDS = ("format", "quantization", "parameters", "architecture", "size")
MAX_CONTEXT_SIZE = 2**31 - 1  # ModelConfig.context_size is an int32


def _object(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _is_text(value: object) -> bool:
    """A string protobuf can carry: JSON's `\\ud800` makes a lone surrogate, which UTF-8 cannot encode."""
    if not isinstance(value, str):
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _text(value: object) -> str:
    return value if _is_text(value) else ""


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_gguf_value(value: object) -> bool:
    """GGUF metadata values are strings in Docker Model Runner; numbers and booleans show as their JSON."""
    return _is_text(value) or isinstance(value, int | float)


def _gguf_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _gguf(value: object) -> dict[str, str]:
    return {k: _gguf_text(v) for k, v in _object(value).items() if _is_text(k) and _is_gguf_value(v)}


def model_config(config: object) -> types_pb2.ModelConfig:
    c = _object(_object(config).get("config"))
    context_size = c.get("context_size")
    return types_pb2.ModelConfig(
        **{name: _text(c.get(name)) for name in TEXT_FIELDS},
        context_size=min(context_size, MAX_CONTEXT_SIZE) if _is_count(context_size) else 0,
        gguf=_gguf(c.get("gguf")),
    )


def parse_created(config: object) -> float:
    """Whole unix seconds of the config's `descriptor.created` (0 when absent or unreadable), as
    Docker Model Runner shows `created`."""
    text = _object(_object(config).get("descriptor")).get("created")
    if not _is_text(text):
        return 0.0
    try:
        return float(int(datetime.fromisoformat(text).timestamp()))
    except (ValueError, OverflowError, OSError):  # a naive year 1 is before the epoch's platform range
        return 0.0


def _kind(value: object) -> str:
    """How a wrong value shows in a message: the number itself, or its JSON type."""
    if isinstance(value, int | float):
        return json.dumps(value)[:40]
    if isinstance(value, str):
        return "a string" if _is_text(value) else "a string with an unpaired surrogate"
    return {dict: "an object", list: "an array"}.get(type(value), "null")


def _config_problems(c: dict) -> Iterator[str]:
    for name in TEXT_FIELDS:
        if c.get(name) is not None and not _is_text(c[name]):
            yield f"config.{name} must be a string, not {_kind(c[name])}"
    size = c.get("context_size")
    if size is not None and not _is_count(size):
        yield f"config.context_size must be a whole number of 0 or more, not {_kind(size)}"
    gguf = c.get("gguf")
    if gguf is not None and not isinstance(gguf, dict):
        yield f"config.gguf must be an object, not {_kind(gguf)}"
    for key, value in _object(gguf).items():
        name = json.dumps(key)[:80]
        if not _is_text(key):
            yield f"config.gguf key {name} has an unpaired surrogate"
        elif value is not None and not _is_gguf_value(value):
            yield f"config.gguf[{name}] must be a string, number or boolean, not {_kind(value)}"


def _problems(config: object) -> Iterator[str]:
    if not isinstance(config, dict):
        yield f"it must be a JSON object, not {_kind(config)}"
        return
    c, descriptor = config.get("config"), config.get("descriptor")
    if c is not None and not isinstance(c, dict):
        yield f"config must be an object, not {_kind(c)}"
    yield from _config_problems(_object(c))
    if descriptor is not None and not isinstance(descriptor, dict):
        yield f"descriptor must be an object, not {_kind(descriptor)}"
    created = _object(descriptor).get("created")
    if created is not None and not _is_text(created):
        yield f"descriptor.created must be a string, not {_kind(created)}"


def config_problem(config: object) -> str | None:
    """The first field that `model_config` or `parse_created` would read as empty for its type (the
    Store refuses such a config rather than list the model without it), or None."""
    return next(_problems(config), None)
