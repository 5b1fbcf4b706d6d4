"""Per-model settings (`/engines/_configure`), persisted as JSON in the Runner's state directory.

Docker Model Runner keeps these in memory only, so a restart silently drops a configured context
size; here every change is written atomically (temporary file, fsync, rename) before it is answered.
An entry an older version saved that today's rules refuse is skipped alone, with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from modelrunner.common.errors import ServiceError
from modelrunner.common.keep_alive import clamp_keep_alive, parse_keep_alive
from modelrunner.runner.backends.base import LoadOptions
from modelrunner.runner.validation import check_load_options

log = logging.getLogger(__name__)

# Runtime flags accepted in `runtime-flags` (llama-server's spelling), and the option each sets.
_FLAGS = {
    "--ctx-size": "context_size", "-c": "context_size",
    "--parallel": "parallel", "-np": "parallel",
    "--n-gpu-layers": "gpu_layers", "-ngl": "gpu_layers",
    "--threads": "threads", "-t": "threads",
    "--batch-size": "batch_size", "-b": "batch_size",
    "--flash-attn": "flash_attention", "-fa": "flash_attention",
    "--prefill-step-factor": "prefill_step_factor",  # ours: llama-server has no such limit
}


# Sampling defaults a model's runtime flags may set (llama-server's spelling, with its ranges); a
# request's own values win over them.
SAMPLING_FLAGS = {
    "--temp": ("temperature", 0.0, 2.0), "--top-k": ("top_k", 0, 1 << 20), "--top-p": ("top_p", 1e-6, 1.0),
    "--min-p": ("min_p", 0.0, 1.0), "--repeat-penalty": ("repeat_penalty", 0.0, 10.0),
}


def _pairs(flags: list[str]) -> list[tuple[str, str]]:
    items = [part for flag in flags for part in flag.split("=", 1)] if flags else []
    known = ", ".join(sorted({k for k in (*_FLAGS, *SAMPLING_FLAGS) if k.startswith("--")}))
    for flag in items[::2]:
        if flag not in _FLAGS and flag not in SAMPLING_FLAGS:
            raise ValueError(f"unsupported runtime flag {flag!r}: supported flags are {known}")
    if len(items) % 2:
        raise ValueError(f"runtime flag {items[-1]} needs a value")
    return list(zip(items[::2], items[1::2]))


def sampling_defaults(flags: list[str] | tuple[str, ...]) -> dict[str, float]:
    """The sampling defaults runtime flags set; raises ValueError naming a bad value."""
    out: dict[str, float] = {}
    for flag, raw in _pairs(list(flags)):
        if flag not in SAMPLING_FLAGS:
            continue
        key, low, high = SAMPLING_FLAGS[flag]
        try:
            value = int(raw) if key == "top_k" else float(raw)
        except ValueError:
            raise ValueError(f"{flag} takes a number, not {raw!r}") from None
        if not low <= value <= high:  # NaN fails too
            raise ValueError(f"{flag} must be in [{low}, {high}], not {raw}")
        out[key] = value
    return out


def parse_step_factor(raw: str, name: str) -> float:
    """A prefill step factor: 0 (no limit) or a number of plain decode steps >= 1."""
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} takes a number, not {raw!r}") from None
    if not (value == 0 or 1 <= value <= 1000):  # NaN fails too
        raise ValueError(f"{name} must be 0 (no limit) or in [1, 1000], not {raw}")
    return value


def parse_runtime_flags(flags: list[str]) -> dict[str, int | float | bool]:
    """Load options from llama-server style flags; raises ValueError naming the flags it knows."""
    out: dict[str, int | bool] = {}
    for flag, raw in _pairs(flags):
        if flag in SAMPLING_FLAGS:
            continue
        key = _FLAGS[flag]
        if key == "flash_attention":
            if raw not in ("on", "off", "true", "false", "1", "0"):
                raise ValueError(f"{flag} takes on or off, not {raw!r}")
            out[key] = raw in ("on", "true", "1")
        elif key == "prefill_step_factor":
            out[key] = parse_step_factor(raw, flag)
        else:
            try:
                out[key] = int(raw)
            except ValueError:
                raise ValueError(f"{flag} takes an integer, not {raw!r}") from None
    return out


@dataclass
class ModelConfig:
    """What the user configured for one model; zero/None means the Runner's default."""

    context_size: int = 0
    runtime_flags: list[str] = field(default_factory=list)
    keep_alive: str = ""
    parallel: int = 0
    flash_attention: bool | None = None
    gpu_layers: int | None = None

    def validate(self) -> None:
        if self.context_size < 0:
            raise ValueError(f"context-size must be positive, not {self.context_size}")
        if self.parallel < 0:
            raise ValueError(f"parallel must be positive, not {self.parallel}")
        if self.keep_alive:
            parse_keep_alive(self.keep_alive)
        parse_runtime_flags(self.runtime_flags)
        sampling_defaults(self.runtime_flags)

    def load_options(self, defaults: LoadOptions) -> LoadOptions:
        """The options a (re)load uses: explicit fields win over runtime flags, which win over defaults."""
        options = replace(defaults, **parse_runtime_flags(self.runtime_flags))
        if self.context_size:
            options = replace(options, context_size=self.context_size)
        if self.parallel:
            options = replace(options, parallel=self.parallel)
        if self.flash_attention is not None:
            options = replace(options, flash_attention=self.flash_attention)
        if self.gpu_layers is not None:
            options = replace(options, gpu_layers=self.gpu_layers)
        return replace(options, runtime_flags=tuple(self.runtime_flags))


# The JSON types of a saved entry's fields: a file another version wrote, or a person edited, may hold any.
_SAVED_TYPES: dict[str, tuple[type, ...]] = {
    "context_size": (int,), "runtime_flags": (list,), "keep_alive": (str,), "parallel": (int,),
    "flash_attention": (bool, type(None)), "gpu_layers": (int, type(None)),
}


def saved_config(name: str, fields: object) -> ModelConfig | None:
    """The saved entry of model `name` as today's rules take it, else None with a warning naming the model
    and the field: one entry an older version wrote must not cost the Runner the others. Each field is
    checked alone (the others at their defaults), so the refusal is that field's."""
    if not isinstance(fields, dict):
        return _skipped(name, "(the entry)", f"is {json.dumps(fields)[:100]}, not an object")
    fields = _clamp_keep_alive(name, fields)
    for key, value in fields.items():
        why = _field_refusal(key, value)
        if why:
            return _skipped(name, key, why)
    return ModelConfig(**fields)


def _field_refusal(key: str, value: object) -> str:
    """Why `/engines/_configure` would refuse `value` for `key` today (the field's rules, the engine's
    limits), or ""."""
    if key not in _SAVED_TYPES:
        return "is no setting this version knows"
    if type(value) not in _SAVED_TYPES[key] or (isinstance(value, list) and not all(isinstance(f, str) for f in value)):
        return f"has the wrong type: {json.dumps(value)[:100]}"
    config = replace(ModelConfig(), **{key: value})
    try:
        config.validate()
        check_load_options(config.load_options(LoadOptions()))
    except ValueError as exc:
        return str(exc)
    except ServiceError as exc:
        return exc.message
    return ""


def _clamp_keep_alive(name: str, fields: dict) -> dict:
    """`fields`, a keep_alive past today's bound (10 years) clamped to it: older versions took one, and it
    meant "stay loaded"; what is no keep-alive at all stays, to be refused."""
    value = fields.get("keep_alive")
    try:
        bounded = clamp_keep_alive(value) if isinstance(value, str) and value else value
    except ValueError:
        return fields
    if bounded == value:
        return fields
    log.warning("a saved keep_alive is past today's bound: clamped to it", extra={"fields": {
        "model": name, "field": "keep_alive", "saved": value[:100], "now": bounded}})
    return {**fields, "keep_alive": bounded}


def _skipped(name: str, key: str, why: str) -> None:
    log.warning("saved settings of a model skipped: today's rules refuse them", extra={"fields": {
        "model": name, "field": key, "error": why}})


class SettingsStore:
    """`settings.json` in the state directory: {"models": {"<reference>": {...}}}."""

    FILE = "settings.json"

    def __init__(self, state_dir: Path) -> None:
        self._path = Path(state_dir) / self.FILE
        self._lock = threading.Lock()
        self._models: dict[str, ModelConfig] = {}
        if self._path.exists():
            data = json.loads(self._path.read_text(encoding="utf-8"))
            for name, fields in data.get("models", {}).items():
                config = saved_config(name, fields)
                if config is not None:
                    self._models[name] = config

    def get(self, reference: str) -> ModelConfig:
        return self._models.get(reference) or ModelConfig()

    def all(self) -> dict[str, ModelConfig]:
        return dict(self._models)

    def put(self, reference: str, config: ModelConfig) -> None:
        config.validate()
        with self._lock:
            models = {**self._models, reference: config}
            self._write(models)
            self._models = models

    def _write(self, models: dict[str, ModelConfig]) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"models": {k: asdict(v) for k, v in sorted(models.items())}}, indent=2)
        fd, tmp = tempfile.mkstemp(prefix=".settings-", dir=self._path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
