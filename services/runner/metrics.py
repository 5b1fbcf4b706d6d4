"""The Runner's OpenTelemetry instruments (exported for Prometheus by common.telemetry).

Names follow what operators know from llama.cpp's server and vLLM: seconds for latencies, totals for
counters, and gauges read at collection time from the live schedulers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

# Latency buckets in seconds, from 5 ms inter-token gaps to 60 s queued first tokens.
_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.5, 5, 10, 20, 60)


class RunnerMetrics:
    """Histograms and counters the decode loops record; gauges observed from `snapshot`."""

    def __init__(self, snapshot: Callable[[], Iterable[tuple[str, int, int, float, float]]]) -> None:
        """`snapshot()` yields (model, active sequences, queued requests, memory bytes, KV-cache use) per
        loaded model."""
        meter = metrics.get_meter("modelrunner.runner")
        self._snapshot = snapshot
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
            "modelrunner_queue_depth", [self._queued], unit="1", description="Requests waiting for a slot"
        )
        meter.create_observable_gauge(
            "modelrunner_active_sequences", [self._active], unit="1", description="Sequences being decoded"
        )
        meter.create_observable_gauge(
            "modelrunner_loaded_models", [self._loaded], unit="1", description="Models in memory"
        )
        meter.create_observable_gauge(
            "modelrunner_model_memory_bytes", [self._memory], unit="By", description="Estimated memory of a model"
        )
        meter.create_observable_gauge(
            "modelrunner_kv_cache_usage_ratio", [self._kv_cache], unit="1",
            description="Used cells of a model's unified KV cache over all its cells (0 to 1)",
        )

    def _queued(self, _: CallbackOptions) -> list[Observation]:
        return [Observation(q, {"model": m}) for m, _a, q, _b, _k in self._snapshot()]

    def _active(self, _: CallbackOptions) -> list[Observation]:
        return [Observation(a, {"model": m}) for m, a, _q, _b, _k in self._snapshot()]

    def _loaded(self, _: CallbackOptions) -> list[Observation]:
        return [Observation(len(list(self._snapshot())))]

    def _memory(self, _: CallbackOptions) -> list[Observation]:
        return [Observation(b, {"model": m}) for m, _a, _q, b, _k in self._snapshot()]

    def _kv_cache(self, _: CallbackOptions) -> list[Observation]:
        return [Observation(k, {"model": m}) for m, _a, _q, _b, k in self._snapshot()]


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
