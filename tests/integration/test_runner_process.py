"""`python -m modelrunner.runner` and `python -m modelrunner.store` as real processes over gRPC:
the Store packages the tiny GGUF, the Runner resolves it through the Store and streams from it."""

from __future__ import annotations

import json
import os
import time

import grpc
import pytest

from modelrunner.common.keep_alive import MAX_KEEP_ALIVE_S
from modelrunner.store.upload import package_files
from modelrunner.v1 import runner_pb2, runner_pb2_grpc, store_pb2, store_pb2_grpc
from tests.conftest import free_port
from tests.support.processes import log_tail, open_paths, start, stop, wait_healthy


def services_env(tmp_path) -> dict[str, str]:
    return {
        **os.environ,
        "MODELRUNNER_DATA_DIR": str(tmp_path / "data"),
        "MODELRUNNER_MODELS_DIR": str(tmp_path / "models"),
        "MODELRUNNER_STORE_ADDR": f"127.0.0.1:{free_port()}",
        "MODELRUNNER_RUNNER_ADDR": f"127.0.0.1:{free_port()}",
        "MODELRUNNER_RUNNER_CONTEXT_SIZE": "512",
        "MODELRUNNER_RUNNER_THREADS": "1",
        "MODELRUNNER_SHUTDOWN_GRACE": "2",
    }


@pytest.fixture
def stack(tmp_path):
    env = services_env(tmp_path)
    store_addr, runner_addr = env["MODELRUNNER_STORE_ADDR"], env["MODELRUNNER_RUNNER_ADDR"]
    procs = [start("modelrunner.store", env), start("modelrunner.runner", env)]
    try:
        wait_healthy(store_addr, procs[0])
        wait_healthy(runner_addr, procs[1])
        yield store_addr, runner_addr, env, procs[1].pid
    finally:
        stop(procs)


def test_runner_streams_a_model_packaged_by_the_store(stack, tiny_gguf, tmp_path):
    store_addr, runner_addr, env, _ = stack
    with grpc.insecure_channel(store_addr) as ch:
        package_files(store_pb2_grpc.StoreStub(ch), [tiny_gguf], "ai/tiny:test", timeout=60)
    with grpc.insecure_channel(runner_addr) as ch:
        runner = runner_pb2_grpc.RunnerStub(ch)
        request = runner_pb2.GenerateRequest(
            model="ai/tiny:test",
            chat=runner_pb2.Chat(messages=[runner_pb2.ChatMessage(role="user", content="hi")]),
            sampling=runner_pb2.SamplingParams(temperature=0, max_tokens=8, ignore_eos=True),
        )
        chunks = list(runner.Generate(request, timeout=60))
        assert chunks[0].model == "docker.io/ai/tiny:test"
        assert chunks[-1].finish_reason == "length" and chunks[-1].usage.completion_tokens == 8
        runner.Configure(runner_pb2.ModelSettings(model="ai/tiny:test", context_size=256), timeout=10)
        with pytest.raises(grpc.RpcError) as err:
            list(runner.Generate(runner_pb2.GenerateRequest(model="ai/nope", prompt="x"), timeout=30))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    state = tmp_path / "data" / "runner" / "settings.json"
    assert '"context_size": 256' in state.read_text()


def test_saved_settings_an_older_version_wrote_load_but_for_the_entry_refused_today(tmp_path):
    """An entry today's rules refuse cost the Runner every saved setting (or its start); now it alone is
    skipped, named in a warning, and a keep_alive past 10 years is clamped to them."""
    env = services_env(tmp_path)
    state = tmp_path / "data" / "runner" / "settings.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"models": {
        "docker.io/ai/kept:latest": {"context_size": 256, "keep_alive": "10m"},
        "docker.io/ai/long:latest": {"keep_alive": "9999999999h"},
        "docker.io/ai/refused:latest": {"context_size": -1},
    }}))
    runner = start("modelrunner.runner", env)
    try:
        wait_healthy(env["MODELRUNNER_RUNNER_ADDR"], runner)
        with grpc.insecure_channel(env["MODELRUNNER_RUNNER_ADDR"]) as ch:
            runner_stub = runner_pb2_grpc.RunnerStub(ch)
            listed = runner_stub.ListConfigurations(runner_pb2.ListConfigurationsRequest(), timeout=10)
    finally:
        stop([runner])
    assert {s.model: (s.context_size, s.keep_alive) for s in listed.settings} == {
        "docker.io/ai/kept:latest": (256, "10m"), "docker.io/ai/long:latest": (0, str(MAX_KEEP_ALIVE_S))}
    logged = [json.loads(line) for line in log_tail(runner, 100_000).splitlines() if line.startswith("{")]
    assert {(e["model"], e["field"]) for e in logged if e["level"] == "warning" and "field" in e} == {
        ("docker.io/ai/refused:latest", "context_size"), ("docker.io/ai/long:latest", "keep_alive")}


def test_deleting_a_loaded_model_keeps_the_runner_serving_and_frees_the_space_on_unload(stack, tiny_gguf):
    store_addr, runner_addr, _, runner_pid = stack
    with grpc.insecure_channel(store_addr) as ch:
        store = store_pb2_grpc.StoreStub(ch)
        package_files(store, [tiny_gguf], "ai/tiny:gone", timeout=60)
        blob = store.ResolveModel(store_pb2.ResolveModelRequest(name="ai/tiny:gone"), timeout=10).gguf_paths[0]
        with grpc.insecure_channel(runner_addr) as rch:
            runner = runner_pb2_grpc.RunnerStub(rch)
            stream = runner.Generate(runner_pb2.GenerateRequest(
                model="ai/tiny:gone", prompt="hello",
                sampling=runner_pb2.SamplingParams(temperature=0, max_tokens=300, ignore_eos=True),
            ), timeout=120)
            first = next(stream)  # loaded and streaming
            store.DeleteModel(store_pb2.DeleteModelRequest(name="ai/tiny:gone"), timeout=10)
            assert not os.path.exists(blob), "the Store collects the blob of a deleted model"
            rest = list(stream)
            assert first.model and rest[-1].finish_reason == "length" and rest[-1].usage.completion_tokens == 300
            assert f"{blob} (deleted)" in open_paths(runner_pid)  # still mapped: the space is held
            runner.UnloadModels(runner_pb2.UnloadModelsRequest(all=True), timeout=30)
            deadline = time.monotonic() + 10
            while f"{blob} (deleted)" in open_paths(runner_pid):
                assert time.monotonic() < deadline, "the unloaded model's weights are still mapped"
                time.sleep(0.1)
