"""Engine isolation with real processes: each loaded model's engine is a child of the Runner, and a
crash, a kill or a hang of one costs only that model's streams (issue 15).

Two tiny GGUFs of different weights are two models. An engine is frozen with SIGSTOP before it is
killed, so its streams are still running when it dies; they ask for a whole 16k context, which the
tiny model cannot fill in the moment between their first chunk and the freeze.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import time

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from modelrunner.common.server import GrpcService
from modelrunner.runner.backends.base import LoadOptions
from modelrunner.runner.backends.llamacpp import LlamaCppBackend
from modelrunner.runner.engine_client import ProcessLauncher
from modelrunner.runner.engine_router import SERVICE, add_runner_to_server
from modelrunner.runner.manager import ManagerConfig, ModelManager
from modelrunner.runner.metrics import RecordedMetrics
from modelrunner.runner.model_settings import SettingsStore
from modelrunner.store.upload import package_files
from modelrunner.v1 import runner_pb2, runner_pb2_grpc, store_pb2, store_pb2_grpc
from tests.conftest import free_port
from tests.support.runner_doubles import FileResolver
from tests.support.processes import alive, children, log_tail, open_paths, start, stop, wait_healthy
from tests.support.tiny_gguf import write_tiny_gguf

MODELS = ("ai/one:test", "ai/two:test")


@contextlib.contextmanager
def _no_core_dumps():
    """Processes started inside inherit a core size limit of 0: the SIGABRT test must not leave a core
    file. Set here, around the start, not by a preexec_fn: that runs Python in the forked child of a
    process with gRPC threads, where a garbage-collected channel can abort the child before its exec
    (seen: the Runner "exited" with SIGABRT and gRPC's epoll error before it ever ran)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))


@pytest.fixture
def engines(tmp_path):
    """A Store and a Runner with MODELS packaged; yields (runner stub, health stub, runner pid, blobs, tmpdir,
    the Runner's Prometheus URL)."""
    store_addr, runner_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    metrics_addr = f"127.0.0.1:{free_port()}"
    engine_tmp = tmp_path / "tmp"
    engine_tmp.mkdir()
    env = {
        **os.environ,
        "TMPDIR": str(engine_tmp),  # where the engines' socket directories go
        "MODELRUNNER_DATA_DIR": str(tmp_path / "data"),
        "MODELRUNNER_MODELS_DIR": str(tmp_path / "models"),
        "MODELRUNNER_STORE_ADDR": store_addr,
        "MODELRUNNER_RUNNER_ADDR": runner_addr,
        "MODELRUNNER_RUNNER_CONTEXT_SIZE": "512",
        "MODELRUNNER_RUNNER_PARALLEL": "4",
        "MODELRUNNER_RUNNER_THREADS": "1",
        "MODELRUNNER_RUNNER_DECODE_TIMEOUT": "3",
        "MODELRUNNER_SHUTDOWN_GRACE": "2",
    }
    runner_env = {**env, "MODELRUNNER_METRICS_LISTEN": metrics_addr}
    with _no_core_dumps():
        procs = [start("modelrunner.store", env), start("modelrunner.runner", runner_env)]
    try:
        wait_healthy(store_addr, procs[0])
        wait_healthy(runner_addr, procs[1])
        blobs = {}
        with grpc.insecure_channel(store_addr) as ch:
            store = store_pb2_grpc.StoreStub(ch)
            for seed, name in enumerate(MODELS):
                gguf = write_tiny_gguf(tmp_path / f"{seed}.gguf", seed=seed)
                package_files(store, [gguf], name, timeout=60)
                blobs[name] = store.ResolveModel(store_pb2.ResolveModelRequest(name=name), timeout=10).gguf_paths[0]
        with grpc.insecure_channel(runner_addr) as ch:
            runner_pb2_grpc.RunnerStub(ch).Configure(runner_pb2.ModelSettings(model=MODELS[0], context_size=16384))
            stubs = runner_pb2_grpc.RunnerStub(ch), health_pb2_grpc.HealthStub(ch)
            yield *stubs, procs[1].pid, blobs, engine_tmp, f"http://{metrics_addr}/metrics"
    finally:
        stop(procs)
        print(log_tail(procs[1], 20000))  # pytest shows it when a test failed


def generate(model: str, max_tokens: int) -> runner_pb2.GenerateRequest:
    return runner_pb2.GenerateRequest(
        model=model, prompt="hello",
        sampling=runner_pb2.SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True),
    )


def engine_of(runner_pid: int, blob: str) -> int:
    """The Runner's child process that has the model's weights mapped."""
    owners = [pid for pid in children(runner_pid) if blob in open_paths(pid)]
    assert len(owners) == 1, f"engines holding {blob}: {owners}"
    return owners[0]


def serving(health) -> bool:
    return health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGABRT])
def test_a_dead_engine_ends_its_own_streams_only_and_the_next_request_reloads_it(engines, signum):
    runner, health, runner_pid, blobs, *_ = engines
    victim, other = MODELS
    for model in MODELS:
        runner.LoadModel(runner_pb2.LoadModelRequest(model=model), timeout=60)
    dying = engine_of(runner_pid, blobs[victim])
    assert dying != engine_of(runner_pid, blobs[other])
    # 4 streams per model: every slot of both engines busy.
    doomed = [runner.Generate(generate(victim, 0), timeout=120) for _ in range(4)]
    spared = [runner.Generate(generate(other, 40), timeout=120) for _ in range(4)]
    assert all(next(call).model == f"docker.io/{victim}" for call in doomed)
    os.kill(dying, signal.SIGSTOP)
    assert all(next(call).model == f"docker.io/{other}" for call in spared)
    os.kill(dying, signum)
    os.kill(dying, signal.SIGCONT)  # a stopped process takes SIGABRT only once it runs again

    name = signal.Signals(signum).name
    for call in doomed:
        with pytest.raises(grpc.RpcError) as err:
            list(call)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert err.value.details() == (
            f"the engine of model docker.io/{victim} exited with signal {name}; the next request loads it again"
        )
    for call in spared:
        assert list(call)[-1].usage.completion_tokens == 40
    assert serving(health)

    again = list(runner.Generate(generate(victim, 5), timeout=60))
    assert again[0].model == f"docker.io/{victim}" and again[-1].usage.completion_tokens == 5
    assert engine_of(runner_pid, blobs[victim]) != dying
    running = runner.ListRunning(runner_pb2.ListRunningRequest(), timeout=10).runners
    assert sorted(r.model_name for r in running) == sorted(f"docker.io/{m}" for m in MODELS)


def test_a_hung_engine_is_killed_and_its_streams_say_so(engines):
    runner, health, runner_pid, blobs, *_ = engines
    model = MODELS[0]
    call = runner.Generate(generate(model, 0), timeout=120)
    assert next(call).model == f"docker.io/{model}"
    hung = engine_of(runner_pid, blobs[model])
    os.kill(hung, signal.SIGSTOP)  # neither decodes nor answers: as a wedged engine looks from outside
    assert serving(health)
    with pytest.raises(grpc.RpcError) as err:
        list(call)  # the Runner gives up on it after MODELRUNNER_RUNNER_DECODE_TIMEOUT (3 s)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert err.value.details() == (
        f"the engine of model docker.io/{model} was stopped because it did not answer for over 3 s; "
        "the next request loads it again"
    )
    assert list(runner.Generate(generate(model, 3), timeout=60))[-1].usage.completion_tokens == 3


def test_unloading_ends_the_engine_process_and_leaves_no_socket(engines):
    runner, _, runner_pid, blobs, engine_tmp, _ = engines
    for model in MODELS:
        list(runner.Generate(generate(model, 2), timeout=60))
    assert len(children(runner_pid)) == 2 and len(os.listdir(engine_tmp)) == 2
    for engine in children(runner_pid):  # the kernel's first choice when memory runs out, not the Runner
        with open(f"/proc/{engine}/oom_score_adj") as f:
            assert f.read().strip() == "500"
    runner.UnloadModels(runner_pb2.UnloadModelsRequest(models=[MODELS[0]]), timeout=30)
    assert children(runner_pid) == [engine_of(runner_pid, blobs[MODELS[1]])]
    runner.UnloadModels(runner_pb2.UnloadModelsRequest(all=True), timeout=30)
    assert children(runner_pid) == [] and os.listdir(engine_tmp) == []


def test_engines_end_with_the_runner_even_when_it_is_killed(engines):
    runner, _, runner_pid, _, engine_tmp, _ = engines
    list(runner.Generate(generate(MODELS[0], 2), timeout=60))
    (engine,) = children(runner_pid)
    os.kill(runner_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(engine) or os.listdir(engine_tmp):
        assert time.monotonic() < deadline, "the engine outlived the Runner"
        time.sleep(0.05)


def test_the_engines_metrics_reach_the_runners_prometheus_endpoint(engines):
    runner, *_, metrics_url = engines
    for model in MODELS:
        list(runner.Generate(generate(model, 6), timeout=60))
    runner.ListRunning(runner_pb2.ListRunningRequest(), timeout=10)  # brings each engine's metrics up
    samples = {
        (s.name, s.labels.get("model")): s.value
        for family in text_string_to_metric_families(httpx.get(metrics_url, timeout=10).text)
        for s in family.samples
    }
    for model in (f"docker.io/{m}" for m in MODELS):
        assert samples["modelrunner_output_tokens_total", model] == 6
        assert samples["modelrunner_time_to_first_token_seconds_count", model] == 1
        assert samples["modelrunner_inter_token_latency_seconds_count", model] == 5
        assert samples["modelrunner_active_sequences", model] == 0


@pytest.fixture
async def router(tiny_gguf, tmp_path):
    """The Runner's gRPC surface over engine processes, served here, with metrics recorded for the test:
    yields (stub, manager, recorded metrics). `broken` is the tiny GGUF cut short."""
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(tiny_gguf.read_bytes()[:-4096])
    recorded = RecordedMetrics()
    manager = ModelManager(
        LlamaCppBackend(), FileResolver({"a": str(tiny_gguf), "broken": str(broken)}),
        SettingsStore(tmp_path / "state"),
        ManagerConfig(defaults=LoadOptions(context_size=16384, parallel=2, threads=1)),
        metrics_factory=lambda _snapshot: recorded, launcher=ProcessLauncher(decode_timeout=0),
    )
    server = GrpcService("127.0.0.1:0", [SERVICE.full_name])
    add_runner_to_server(manager, server.server)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    yield runner_pb2_grpc.RunnerStub(channel), manager, recorded
    await channel.close()
    await server.stop(0)
    await manager.close()


async def test_a_model_that_cannot_load_is_failed_precondition_with_the_reason(router):
    stub, manager, _ = router
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.LoadModel(runner_pb2.LoadModelRequest(model="broken"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details().startswith("cannot load docker.io/ai/broken:latest: ")
    assert manager.loaded() == []


async def test_engine_load_and_metrics_reach_the_runner(router):
    stub, _, recorded = router
    call = stub.Generate(generate("a", 0))
    first = await call.read()
    assert first.model == "docker.io/ai/a:latest"
    (running,) = (await stub.ListRunning(runner_pb2.ListRunningRequest())).runners
    assert (running.slots, running.slots_busy, running.queued, running.in_use) == (2, 1, 0, True)
    call.cancel()
    done = [c async for c in stub.Generate(generate("a", 7))]
    assert done[-1].usage.completion_tokens == 7
    (running,) = (await stub.ListRunning(runner_pb2.ListRunningRequest())).runners  # asks the engine
    assert (running.slots_busy, running.queued, running.in_use) == (0, 0, False)
    kept = {(name, method): values for name, method, _attrs, values in recorded.drain()}
    assert kept[("time_to_first_token", "record")] and kept[("inter_token_latency", "record")]
    assert sum(kept[("output_tokens", "add")]) >= 8  # the cancelled stream's tokens, and 7


async def test_a_lost_connection_to_a_live_engine_ends_that_engine_and_the_next_request_reloads(router):
    """The hop breaks while the engine still runs (the review's case): its stream ends UNAVAILABLE, the
    engine, which nobody can reach any more, is killed, and the model is served again at once."""
    stub, manager, _ = router
    call = stub.Generate(generate("a", 0))
    assert (await call.read()).model
    (entry,) = manager.loaded()
    engine, pid = entry.engine, entry.engine.pid
    engine._connection.transport.abort()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        while await call.read() is not grpc.aio.EOF:
            pass
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    await asyncio.wait_for(engine._exited.wait(), 60)
    assert not alive(pid)
    done = [c async for c in stub.Generate(generate("a", 3))]
    assert done[-1].usage.completion_tokens == 3 and manager.loaded()[0].engine.pid != pid


async def test_unary_calls_and_the_engines_own_errors_cross_unchanged(router):
    stub, _, _ = router
    embedded = await stub.Embed(runner_pb2.EmbedRequest(model="a", inputs=["hello", "world"]))
    assert embedded.model == "docker.io/ai/a:latest" and len(embedded.embeddings) == 2
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Embed(runner_pb2.EmbedRequest(model="a", inputs=["ok", ""]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "inputs[1]" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Embed(runner_pb2.EmbedRequest(inputs=["x"]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "model" in err.value.details()


async def test_a_requests_own_context_size_is_checked_before_any_engine_starts(router):
    stub, manager, _ = router
    request = generate("a", 1)
    request.context_size = -5
    for call in (lambda: stub.LoadModel(runner_pb2.LoadModelRequest(model="a", context_size=-1)),
                 lambda: anext(aiter(stub.Generate(request)))):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "context_size" in err.value.details()
    assert manager.loaded() == []


def scrape(runner, metrics_url: str) -> dict:
    """{(name, model label or None for the replica's series): value} after the Runner brought its engines' load up to date, and the
    families' types and help text under ("type", name) and ("help", name)."""
    runner.ListRunning(runner_pb2.ListRunningRequest(), timeout=10)
    out = {}
    for family in text_string_to_metric_families(httpx.get(metrics_url, timeout=10).text):
        out["type", family.name], out["help", family.name] = family.type, family.documentation
        for s in family.samples:
            if s.name in POOL_GAUGES and (s.name, None) not in out:
                assert not s.labels.get("model"), f"the replica's own {s.name} is not the first series"
            out.setdefault((s.name, s.labels.get("model") or None), s.value)  # the exporter writes model=""
            if s.name == "modelrunner_loaded_models_info":
                out["adapters"] = {k: v for k, v in s.labels.items() if not k.startswith("otel_scope_")}
    return out


def wait_for(runner, metrics_url: str, condition) -> dict:
    """Scrapes until `condition(samples)` holds (a condition, not a duration: the cap only ends a hang)."""
    deadline = time.monotonic() + 60
    while not condition(samples := scrape(runner, metrics_url)):
        assert time.monotonic() < deadline, f"never held: {samples}"
        time.sleep(0.05)
    return samples


POOL_GAUGES = ("modelrunner_queue_depth", "modelrunner_active_sequences", "modelrunner_kv_cache_usage_ratio")


def test_the_model_server_contract_an_endpoint_picker_reads(engines):
    """What the Gateway API Inference Extension's EPP scrapes (deploy/k8s/overlays/inference-pool):
    waiting, running and KV use, first as one unlabelled series for the replica, then per model; and
    the loaded models as vLLM-style "adapters". 8 streams on 4 slots: 4 run, 4 wait."""
    runner, *_, metrics_url = engines
    idle = scrape(runner, metrics_url)
    for name in POOL_GAUGES:
        assert idle["type", name] == "gauge" and idle["help", name]
        assert idle[name, None] == 0
    assert idle["adapters"] == {"running_lora_adapters": "", "waiting_lora_adapters": "", "max_lora": "3"}

    model = f"docker.io/{MODELS[0]}"
    calls = [runner.Generate(generate(MODELS[0], 0), timeout=120) for _ in range(8)]  # up to the whole context
    try:
        busy = wait_for(runner, metrics_url, lambda s: s.get(("modelrunner_active_sequences", model)) == 4
                        and s.get(("modelrunner_queue_depth", model)) == 4)
        assert busy["modelrunner_active_sequences", None] == 4 and busy["modelrunner_queue_depth", None] == 4
        assert 0 < busy["modelrunner_kv_cache_usage_ratio", model] <= 1
        assert busy["modelrunner_kv_cache_usage_ratio", None] == busy["modelrunner_kv_cache_usage_ratio", model]
        assert busy["adapters"]["running_lora_adapters"] == f"{MODELS[0]},{model}"  # the names clients send
    finally:
        for call in calls:
            call.cancel()
    after = wait_for(runner, metrics_url, lambda s: s.get(("modelrunner_active_sequences", None)) == 0
                     and s.get(("modelrunner_queue_depth", None)) == 0)
    assert after["modelrunner_kv_cache_usage_ratio", None] == 0  # the finished prompts are cache, not load
