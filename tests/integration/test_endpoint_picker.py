"""The edge as its own inference gateway: the real Envoy, rendered with `--picker --pool`, in front of
two real replicas on loopback (each a Runner with its own /metrics listener and a gateway beside it,
over one Store), choosing through a test double of the endpoint picker (tests/support/epp_double.py)
that speaks the EPP's ext_proc protocol and picks the replica with fewer requests waiting.

Who served what is counted from each replica's own Runner metrics (time-to-first-token samples, one
per request), brought up to date by ListRunning: no assertion rests on timing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelrunner.v1 import runner_pb2, runner_pb2_grpc
from tests.conftest import free_port
from tests.support import processes
from tests.support.deploy_scripts import build_descriptors, render
from tests.support.envoy import running_envoy
from tests.support.epp_double import Load, parse_load
from tests.support.packaging import package
from tests.support.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
MODEL = "ai/tiny:latest"
EOS = "2"  # tests/support/tiny_gguf.py's end-of-sequence token, banned so every stream runs to max_tokens
MAX_TOKENS = 24


@dataclass
class Replica:
    """A Runner and a gateway serving OpenAI beside it: one endpoint of the pool."""

    stack: Stack
    metrics_url: str

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.stack.http_port}"

    @property
    def runner(self) -> subprocess.Popen:
        return self.stack.procs["runner"]

    def served(self) -> int:
        """Requests its Runner has answered a first token for, all models together."""
        with grpc.insecure_channel(f"127.0.0.1:{self.stack.ports['runner']}") as channel:
            runner_pb2_grpc.RunnerStub(channel).ListRunning(runner_pb2.ListRunningRequest(), timeout=10)
        text = httpx.get(self.metrics_url, timeout=10).text
        return int(sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "modelrunner_time_to_first_token_seconds_count"
        ))


    def wait_idle(self) -> None:
        """Until its gauges read no request waiting or running (a slot is freed just after its stream ends)."""
        deadline = time.monotonic() + 30
        while True:
            self.served()  # the Runner asks its engines for their load
            load = parse_load(httpx.get(self.metrics_url, timeout=10).text)
            if load == Load(0, 0):
                return
            assert time.monotonic() < deadline, load
            time.sleep(0.1)


def start_replica(workdir: Path, shared: Stack) -> Replica:
    workdir.mkdir()
    stack = Stack(workdir, {
        "MODELRUNNER_MODELS_DIR": shared.env["MODELRUNNER_MODELS_DIR"],
        "MODELRUNNER_STORE_ADDR": f"127.0.0.1:{shared.ports['store']}",
        "MODELRUNNER_DISTRIBUTION_ADDR": f"127.0.0.1:{shared.ports['distribution']}",
        "MODELRUNNER_RUNNER_STATE_DIR": str(workdir / "runner-state"),
    })
    metrics = f"127.0.0.1:{free_port()}"
    stack.env["MODELRUNNER_METRICS_LISTEN"] = metrics  # the Runner's own listener, not the gateway's
    stack.start(("runner",))
    del stack.env["MODELRUNNER_METRICS_LISTEN"]
    stack.start(("gateway",))
    return Replica(stack, f"http://{metrics}/metrics")


@dataclass
class Pool:
    edge: str
    replicas: list[Replica]
    picker: subprocess.Popen


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path) -> Iterator[Pool]:
    tmp = tmp_path_factory.mktemp("pool")
    (tmp / "shared").mkdir()
    shared = Stack(tmp / "shared").start(("store", "distribution"))
    replicas: list[Replica] = []
    picker = None
    try:
        for name in ("store", "distribution"):
            processes.wait_healthy(f"127.0.0.1:{shared.ports[name]}", shared.procs[name])
        package(f"127.0.0.1:{shared.ports['store']}", tiny_gguf, MODEL)
        replicas = [start_replica(tmp / f"replica{i}", shared) for i in range(2)]
        for replica in replicas:
            replica.stack.wait_healthy()
        picker_address = f"127.0.0.1:{free_port()}"
        picker = processes.start("tests.support.epp_double", {
            **os.environ,
            "EPP_DOUBLE_LISTEN": picker_address,
            "EPP_DOUBLE_POOL": ",".join(f"{r.endpoint}={r.metrics_url}" for r in replicas),
        }, cwd=ROOT)
        processes.wait_healthy(picker_address, picker)
        first = replicas[0].stack
        config = render.render(
            render.load(),
            descriptors=build_descriptors.build(tmp / "modelrunner.pb"),
            upstreams={  # the management routes: the shared services and the first replica's gateway
                "gateway": f"127.0.0.1:{first.http_port}",
                "store": f"127.0.0.1:{shared.ports['store']}",
                "distribution": f"127.0.0.1:{shared.ports['distribution']}",
                "runner": f"127.0.0.1:{first.ports['runner']}",
            },
            listen=f"127.0.0.1:{free_port()}",
            grpc_listen=f"127.0.0.1:{free_port()}",
            probes_listen=f"127.0.0.1:{free_port()}",
            admin=f"127.0.0.1:{free_port()}",
            endpoint_picker=picker_address,
            pool=[r.endpoint for r in replicas],
        )
        with running_envoy(config, tmp) as edge:
            yield Pool(edge, replicas, picker)
    finally:
        if picker is not None and picker.poll() is None:
            picker.terminate()
            picker.wait(timeout=20)
        for replica in replicas:
            replica.stack.stop()
        shared.stop()


def chat(base_url: str, started: threading.Event | None = None) -> str | None:
    """Streams a greedy chat of MAX_TOKENS tokens; its finish_reason (None when the stream was cut).
    `started` is set at the first token."""
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120)
    finish_reason = None
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Count to ten."}], stream=True,
        max_tokens=MAX_TOKENS, temperature=0, logit_bias={EOS: -100},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and started is not None:
            started.set()
        if chunk.choices:
            finish_reason = chunk.choices[0].finish_reason or finish_reason
    return finish_reason


def concurrently(base_url: str, n: int) -> list[str | None]:
    with ThreadPoolExecutor(n) as threads:
        return list(threads.map(lambda _: chat(base_url), range(n)))


def test_streams_spread_over_the_pool_and_survive_a_dead_replica(pool: Pool) -> None:
    a, b = pool.replicas
    for replica in pool.replicas:  # loaded, and idle again by their own gauges before the picker reads them
        assert chat(f"http://{replica.endpoint}") == "length"
        replica.wait_idle()
    before = {r.endpoint: r.served() for r in pool.replicas}

    assert concurrently(pool.edge, 16) == ["length"] * 16
    spread = {r.endpoint: r.served() - before[r.endpoint] for r in pool.replicas}
    assert sum(spread.values()) == 16 and all(spread.values()), spread

    # Streams in flight when one replica's Runner dies may be cut; none started after it is lost.
    flags = [threading.Event() for _ in range(4)]
    with ThreadPoolExecutor(len(flags)) as threads:
        in_flight = [threads.submit(chat, pool.edge, flag) for flag in flags]
        for flag, future in zip(flags, in_flight):
            assert flag.wait(60), future
        os.kill(a.runner.pid, signal.SIGKILL)
        a.runner.wait(timeout=20)
        for future in in_flight:
            with contextlib.suppress(openai.APIError, httpx.HTTPError):
                future.result(timeout=120)  # ends, whole or cut
    served_b = b.served()
    assert concurrently(pool.edge, 8) == ["length"] * 8
    assert b.served() - served_b == 8


def test_no_ready_replica_is_503_and_a_dead_picker_fails_closed(pool: Pool) -> None:
    """Last: it stops what is left of the pool, then the picker."""
    for replica in pool.replicas:
        if replica.runner.poll() is None:
            os.kill(replica.runner.pid, signal.SIGKILL)
            replica.runner.wait(timeout=20)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    refused = httpx.post(f"{pool.edge}/v1/chat/completions", json=body, timeout=30)
    assert refused.status_code == 503 and refused.text == "no endpoint of the pool is ready", refused.text

    pool.picker.terminate()
    pool.picker.wait(timeout=20)
    failed = httpx.post(f"{pool.edge}/v1/chat/completions", json=body, timeout=30)
    assert failed.status_code == 503 and "no endpoint" not in failed.text, failed.text
    # Routes outside the pool never ask the picker.
    assert httpx.get(f"{pool.edge}/api/version", timeout=30).status_code == 200
