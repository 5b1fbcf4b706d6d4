"""A Runner with models to preload (a replica in an inference pool) is not ready until they are loaded,
and waits for a model that is not in the Store yet instead of failing (issue 19)."""

from __future__ import annotations

import os
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelrunner.store.upload import package_files
from modelrunner.v1 import runner_pb2, runner_pb2_grpc, store_pb2_grpc
from tests.conftest import free_port
from tests.support.processes import start, wait_healthy
from tests.support.tiny_gguf import write_tiny_gguf

RUNNER_SERVICE = "modelrunner.v1.Runner"
MODEL = "ai/later:test"


def status(health, service: str) -> int:
    return health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def test_a_preloading_runner_waits_for_its_model_and_is_ready_once_it_is_loaded(tmp_path):
    store_addr, runner_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "MODELRUNNER_DATA_DIR": str(tmp_path / "data"),
        "MODELRUNNER_MODELS_DIR": str(tmp_path / "models"),
        "MODELRUNNER_STORE_ADDR": store_addr,
        "MODELRUNNER_RUNNER_ADDR": runner_addr,
        "MODELRUNNER_RUNNER_CONTEXT_SIZE": "512",
        "MODELRUNNER_RUNNER_THREADS": "1",
        "MODELRUNNER_RUNNER_PRELOAD": MODEL,
    }
    procs = [start("modelrunner.store", env), start("modelrunner.runner", env)]
    try:
        wait_healthy(store_addr, procs[0])
        wait_healthy(runner_addr, procs[1])  # the process serves (liveness) ...
        with grpc.insecure_channel(runner_addr) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            runner = runner_pb2_grpc.RunnerStub(channel)
            # ... but not inference: its model is not in the Store, and it keeps waiting rather than exit.
            assert status(health, RUNNER_SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
            assert procs[1].poll() is None
            with grpc.insecure_channel(store_addr) as store:
                package_files(store_pb2_grpc.StoreStub(store), [write_tiny_gguf(tmp_path / "m.gguf")], MODEL, timeout=60)
            deadline = time.monotonic() + 60  # a cap on a hang: the Runner retries every 5 s
            while status(health, RUNNER_SERVICE) != health_pb2.HealthCheckResponse.SERVING:
                assert procs[1].poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
            running = runner.ListRunning(runner_pb2.ListRunningRequest(), timeout=10).runners
            assert [r.model_name for r in running] == [f"docker.io/{MODEL}"]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
