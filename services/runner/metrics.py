"""The Runner's OpenTelemetry instruments (exported for Prometheus by common.telemetry).

Names follow what operators know from llama.cpp's server and vLLM: seconds for latencies, totals for
counters, and gauges read at collection time from the live schedulers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from modelrunner.common.names import DEFAULT_NAMESPACE, DEFAULT_TAG, InvalidReference, parse_reference

# Latency buckets in seconds, from 5 ms inter-token gaps to 60 s queued first tokens.
_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.5, 5, 10, 20, 60)


@dataclass(frozen=True)
class ModelLoad:
    """One loaded model's load, as the gauges report it."""

    model: str
    running: int          # sequences in the batch
    waiting: int          # requests queued for a slot
    memory_bytes: float
    kv_usage: float       # used cells over the model's cells, 0 to 1
    kv_bytes: float       # what its KV cache weighs, to weight the overall KV use


@dataclass(frozen=True)
class RunnerLoad:
    """What the Runner holds: the loaded models, those loading, and how many it may hold."""

    models: list[ModelLoad] = field(default_factory=list)
    loading: list[str] = field(default_factory=list)
    max_models: int = 0


class RunnerMetrics:
    """Histograms and counters the decode loops record; gauges observed from `snapshot`.

    The queue, running and KV-use gauges are the model-server contract an endpoint picker (the Gateway
    API Inference Extension's EPP) reads: each has one unlabelled series for the whole replica, emitted
    first (the EPP takes the first series that matches a bare name), then one per model.
    `modelrunner_loaded_models_info` tells the EPP which models this replica holds, in the shape of
    vLLM's `vllm:lora_requests_info` (models as "adapters"), so requests go where their model is loaded.
    """

    def __init__(self, snapshot: Callable[[], RunnerLoad]) -> None:
        meter = metrics.get_meter("modelrunner.runner")
        self._snapshot = snapshot
        self._info_since: dict[tuple, float] = {}
        self.time_to_first_token = meter.create_histogram(
            "modelrunner_time_to_first_token_seconds",
            unit="s",
            description="Time from a request's arrival to its first generated token",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        )
        self.inter_token_latency = meter.create_histogram(
            "modelrunner_inter_token_latency_seconds",
            unit="s",
            description="Time between two generated tokens of one sequence",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        )
        self.output_tokens = meter.create_counter(
            "modelrunner_output_tokens", unit="1", description="Tokens generated"
        )
        self.prompt_tokens = meter.create_counter(
            "modelrunner_prompt_tokens", unit="1", description="Prompt tokens of the requests admitted (cached ones included)"
        )
        self.cached_prompt_tokens = meter.create_counter(
            "modelrunner_cached_prompt_tokens", unit="1",
            description="Prompt tokens found in a slot's KV cache, so not prefilled again",
        )
        meter.create_observable_gauge(
            "modelrunner_queue_depth", [self._queued], unit="1",
            description="Requests waiting for a slot (no model label: all models)",
        )
        meter.create_observable_gauge(
            "modelrunner_active_sequences", [self._active], unit="1",
            description="Sequences being decoded (no model label: all models)",
        )
        meter.create_observable_gauge(
            "modelrunner_loaded_models", [self._loaded], unit="1", description="Models in memory"
        )
        meter.create_observable_gauge(
            "modelrunner_loaded_models_info", [self._info], unit="1",
            description="Since when (Unix seconds) these models are loaded (running_lora_adapters), loading "
            "(waiting_lora_adapters) and at most max_lora may be, as vLLM's lora_requests_info",
        )
        meter.create_observable_gauge(
            "modelrunner_model_memory_bytes", [self._memory], unit="By", description="Estimated memory of a model"
        )
        meter.create_observable_gauge(
            "modelrunner_kv_cache_usage_ratio", [self._kv_cache], unit="1",
            description="Cells of the unified KV cache that running sequences use, over all its cells (0 to 1; "
            "no model label: the share of all loaded models' KV-cache memory)",
        )

    def _queued(self, _: CallbackOptions) -> list[Observation]:
        models = self._snapshot().models
        return [Observation(sum(m.waiting for m in models))] + [
            Observation(m.waiting, {"model": m.model}) for m in models
        ]

    def _active(self, _: CallbackOptions) -> list[Observation]:
        models = self._snapshot().models
        return [Observation(sum(m.running for m in models))] + [
            Observation(m.running, {"model": m.model}) for m in models
        ]

    def _loaded(self, _: CallbackOptions) -> list[Observation]:
        return [Observation(len(self._snapshot().models))]

    def _info(self, _: CallbackOptions) -> list[Observation]:
        load = self._snapshot()
        labels = {
            "running_lora_adapters": ",".join(sorted({n for m in load.models for n in names_sent(m.model)})),
            "waiting_lora_adapters": ",".join(sorted({n for r in load.loading for n in names_sent(r)})),
            "max_lora": str(load.max_models),
        }
        key = tuple(labels.values())
        since = self._info_since.setdefault(key, time.time())
        self._info_since = {key: since}  # the picker keeps the newest label set: only the current one
        return [Observation(since, labels)]

    def _memory(self, _: CallbackOptions) -> list[Observation]:
        return [Observation(m.memory_bytes, {"model": m.model}) for m in self._snapshot().models]

    def _kv_cache(self, _: CallbackOptions) -> list[Observation]:
        models = self._snapshot().models
        total = sum(m.kv_bytes for m in models)
        overall = sum(m.kv_usage * m.kv_bytes for m in models) / total if total else 0.0
        return [Observation(overall)] + [Observation(m.kv_usage, {"model": m.model}) for m in models]


def names_sent(reference: str) -> list[str]:
    """The names clients send for a model (the picker matches a request's `model` exactly):
    `docker.io/ai/smollm2:latest`, `ai/smollm2:latest`, `ai/smollm2`, and `smollm2` on Docker Hub's `ai/`."""
    try:
        ref = parse_reference(reference)
    except InvalidReference:
        return [reference]
    names = [reference, ref.familiar]
    if ref.tag == DEFAULT_TAG and not ref.digest:
        short = ref.familiar.removesuffix(f":{DEFAULT_TAG}")
        names.append(short)
        if short.startswith(f"{DEFAULT_NAMESPACE}/"):
            names.append(short.removeprefix(f"{DEFAULT_NAMESPACE}/"))
    return list(dict.fromkeys(names))


class _Instrument:
    def __init__(self, recorder: RecordedMetrics, name: str) -> None:
        self._recorder, self._name = recorder, name

    def record(self, value: float, attributes: dict | None = None) -> None:
        self._recorder.keep(self._name, "record", value, attributes)

    def add(self, value: float, attributes: dict | None = None) -> None:
        self._recorder.keep(self._name, "add", value, attributes)


class RecordedMetrics:
    """Stands in for RunnerMetrics in an engine process: keeps what its decode loop records until the
    Runner collects it (`drain`) and replays it into its own RunnerMetrics (`replay`), the one its
    Prometheus endpoint serves. Any instrument name works, so a new one needs no change here."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[tuple[str, str, tuple], list[float]] = {}

    def __getattr__(self, name: str) -> _Instrument:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Instrument(self, name)

    def keep(self, name: str, method: str, value: float, attributes: dict | None) -> None:
        key = (name, method, tuple(sorted((attributes or {}).items())))
        with self._lock:
            self._kept.setdefault(key, []).append(value)

    def drain(self) -> list[list]:
        """What was recorded since the last drain, as JSON-ready [name, method, attributes, values]."""
        with self._lock:
            kept, self._kept = self._kept, {}
        return [[name, method, dict(attrs), values] for (name, method, attrs), values in kept.items()]


def replay(metrics: RunnerMetrics, drained: list[list]) -> None:
    """Records in `metrics` what an engine process's RecordedMetrics drained (counters summed)."""
    for name, method, attributes, values in drained:
        instrument = getattr(metrics, name, None)
        if instrument is None:
            continue
        if method == "add":
            instrument.add(sum(values), attributes)
        else:
            for value in values:
                instrument.record(value, attributes)
