"""The pieces of engine isolation that need no process: what is routed to engines, the spec an engine
process is started with, and how its metrics travel up to the Runner's."""

from __future__ import annotations

import json
import threading
import time

from modelrunner.runner.backends.base import LoadOptions
from modelrunner.runner.engine import EngineSpec
from modelrunner.runner.engine_process import DecodeClock, spec_from_json, spec_to_json
from modelrunner.runner.engine_pipe import LIFECYCLE, per_model_methods
from modelrunner.runner.metrics import RecordedMetrics, replay
from modelrunner.runner.resolver import ResolvedModel


def test_every_rpc_naming_a_model_goes_to_its_engine_and_the_lifecycle_stays():
    routed = {m.name for m in per_model_methods()}
    assert {"Generate", "Embed", "Rerank", "Tokenize"} <= routed
    assert not routed & LIFECYCLE


def test_an_engine_spec_survives_the_trip_to_the_engine_process():
    spec = EngineSpec(
        ResolvedModel("docker.io/ai/a:latest", "sha256:a", ("/m/a.gguf", "/m/b.gguf"), "{{ x }}"),
        LoadOptions(context_size=512, parallel=3, gpu_layers=None, flash_attention=True, runtime_flags=("--x",)),
        max_queue=7,
        keep_prompts=False,
    )
    data = json.loads(spec_to_json(spec, "/tmp/d/sock", log_level="info", log_format="text"))
    assert spec_from_json(data) == spec and data["socket"] == "/tmp/d/sock"


class Instrument:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float, dict]] = []

    def record(self, value: float, attributes: dict) -> None:
        self.calls.append(("record", value, attributes))

    def add(self, value: float, attributes: dict) -> None:
        self.calls.append(("add", value, attributes))


class Metrics:
    def __init__(self) -> None:
        self.inter_token_latency = Instrument()
        self.output_tokens = Instrument()


def test_recorded_metrics_replay_into_the_runners_instruments_once():
    recorded = RecordedMetrics()
    a, b = {"model": "a"}, {"model": "b"}
    for value in (0.01, 0.02):
        recorded.inter_token_latency.record(value, a)
    for attributes in (a, a, b):
        recorded.output_tokens.add(1, attributes)
    recorded.not_known_here.add(1, a)  # an instrument the Runner lacks is skipped, not an error
    metrics = Metrics()
    replay(metrics, json.loads(json.dumps(recorded.drain())))  # as it crosses: JSON
    assert metrics.inter_token_latency.calls == [("record", 0.01, a), ("record", 0.02, a)]
    assert sorted(metrics.output_tokens.calls, key=lambda c: c[2]["model"]) == [("add", 2, a), ("add", 1, b)]
    assert recorded.drain() == []


class BlockingModel:
    def __init__(self, batch_tokens: int = 1) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.batch_tokens = batch_tokens

    def decode(self) -> int:
        self.entered.set()
        self.release.wait(10)
        return 0


def test_the_decode_clock_sees_a_decode_step_that_does_not_return():
    model = BlockingModel()
    clock = DecodeClock(model)
    assert clock.running_for() == 0
    step = threading.Thread(target=model.decode)
    step.start()
    model.entered.wait(10)
    time.sleep(0.01)
    assert clock.running_for() >= 0.01  # what the Runner compares with --runner-decode-timeout
    model.release.set()
    step.join()
    assert clock.running_for() == 0


def test_the_decode_clock_gives_a_big_step_a_timeout_per_512_tokens():
    model = BlockingModel(batch_tokens=2048)
    clock = DecodeClock(model)
    step = threading.Thread(target=model.decode)
    started = time.monotonic()
    step.start()
    model.entered.wait(10)
    time.sleep(0.04)
    counted, elapsed = clock.running_for(), time.monotonic() - started
    model.release.set()
    step.join()
    assert 0.01 <= counted <= elapsed / 4  # a quarter of the time it ran: four 512-token shares

