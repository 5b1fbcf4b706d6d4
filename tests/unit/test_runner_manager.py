"""Model lifecycle with a fake clock, and the gRPC surface served in-process on the tiny GGUF."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest

from modelrunner.common.errors import ServiceError
from modelrunner.runner.backends.llamacpp import LlamaCppBackend
from modelrunner.runner.manager import ManagerConfig, ModelManager
from modelrunner.runner.model_settings import ModelConfig, SettingsStore
from modelrunner.runner.resolver import ResolvedModel
from modelrunner.v1 import runner_pb2
from tests.support.runner_doubles import DEFAULTS, FakeClock, FileResolver, chat_request, make_manager

async def test_keep_alive_expires_idle_models_and_zero_unloads_at_once(files, tmp_path):
    clock = FakeClock()
    manager = make_manager(files, tmp_path, clock, keep_alive="5m")
    await manager.load("a")
    await manager.load("b", keep_alive="-1")
    clock.now += 299
    assert await manager.expire_idle() == []
    clock.now += 2
    assert await manager.expire_idle() == ["docker.io/ai/a:latest"]
    clock.now += 10**6
    assert [e.name for e in manager.loaded()] == ["docker.io/ai/b:latest"]
    async with manager.acquire("c", keep_alive="0"):
        assert len(manager.loaded()) == 2
    assert [e.name for e in manager.loaded()] == ["docker.io/ai/b:latest"]
    await manager.close()


class GatedResolver(FileResolver):
    """Resolves once `open` is set, to watch a request while its name is resolving."""

    def __init__(self, files) -> None:
        super().__init__(files)
        self.open = asyncio.Event()

    async def resolve(self, name: str) -> ResolvedModel:
        await self.open.wait()
        return await super().resolve(name)


async def test_requests_count_as_arriving_only_while_their_name_resolves(files, tmp_path):
    manager = ModelManager(
        LlamaCppBackend(), GatedResolver(files), SettingsStore(tmp_path / "state"), ManagerConfig(defaults=DEFAULTS),
        clock=FakeClock(),
    )
    good, missing = asyncio.create_task(manager.load("a")), asyncio.create_task(manager.load("nope"))
    await asyncio.sleep(0.01)
    assert manager.arrivals.count == 2
    manager.resolver.open.set()
    await good  # the load itself (seconds for a real model) is not counted
    with pytest.raises(ServiceError):
        await missing
    assert manager.arrivals.count == 0
    await manager.close()


class TwoTagResolver(FileResolver):
    """Every name resolves to one model id, as two tags of one model do in the Store."""

    async def resolve(self, name: str) -> ResolvedModel:
        resolved = await super().resolve("a")
        return ResolvedModel(f"docker.io/ai/{name}:latest", resolved.model_id, resolved.gguf_paths, None)


async def test_two_tags_of_one_model_share_one_loaded_copy(files, tmp_path):
    cfg = ManagerConfig(defaults=DEFAULTS)
    manager = ModelManager(
        LlamaCppBackend(), TwoTagResolver(files), SettingsStore(tmp_path / "state"), cfg, clock=FakeClock()
    )
    first = await manager.load("gemma3")
    second = await manager.load("gemma3-270m")
    assert first is second and len(manager.loaded()) == 1
    await manager.close()


async def test_a_tag_configured_otherwise_gets_its_own_engine_whatever_loaded_first(files, tmp_path):
    manager = ModelManager(
        LlamaCppBackend(), TwoTagResolver(files), SettingsStore(tmp_path / "state"), ManagerConfig(defaults=DEFAULTS),
        clock=FakeClock(),
    )
    first = await manager.load("gemma3")
    manager.settings.put("docker.io/ai/small:latest", ModelConfig(context_size=512))
    manager.mark_stale("docker.io/ai/small:latest")
    small = await manager.load("small")
    assert small is not first and small.model.facts.context_size == 512
    assert await manager.load("gemma3") is first and first.model.facts.context_size == 256
    assert await manager.load("other") is first  # a name with no settings of its own shares the default copy
    await manager.close()


async def test_a_requests_context_shares_the_engine_that_runs_it_anyway(files, tmp_path):
    """As llama.cpp pads a context to 256 cells and Ollama clamps num_ctx to the trained context (512
    for the tiny model), requests whose context comes to the same share one engine."""
    manager = make_manager(files, tmp_path, FakeClock())
    configured = await manager.load("a")  # DEFAULTS: 256
    assert await manager.load("a", context_size=256) is configured
    assert await manager.load("a", context_size=100) is configured
    larger = await manager.load("a", context_size=300)
    assert larger is not configured and larger.model.facts.context_size == 512
    assert await manager.load("a", context_size=10**6) is larger
    running = {(r.model, r.memory_bytes) for r in manager._snapshot().models}
    assert running == {("docker.io/ai/a:latest", configured.memory.total_bytes + larger.memory.total_bytes)}
    await manager.close()


async def test_an_engine_in_use_when_its_settings_change_holds_no_place_the_new_one_needs(files, tmp_path):
    manager = make_manager(files, tmp_path, FakeClock(), max_loaded=1)
    async with manager.acquire("a") as old:
        manager.settings.put("docker.io/ai/a:latest", ModelConfig(context_size=512))
        manager.mark_stale("docker.io/ai/a:latest")
        new = await manager.load("a")  # not "every loaded model is in use"
        assert new is not old and new.model.facts.context_size == 512
    assert manager.loaded() == [new]  # the old one went with its last request
    await manager.close()


async def test_lru_eviction_never_takes_a_model_in_use(files, tmp_path):
    clock = FakeClock()
    manager = make_manager(files, tmp_path, clock, max_loaded=2)
    async with manager.acquire("a"):
        clock.now += 1
        await manager.load("b")
        clock.now += 1
        await manager.load("c")  # evicts b: a is older but in use
        assert sorted(e.name for e in manager.loaded()) == ["docker.io/ai/a:latest", "docker.io/ai/c:latest"]
        async with manager.acquire("c"):
            with pytest.raises(ServiceError, match="every loaded model is in use") as err:
                await manager.load("b")
            assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    await manager.close()


async def test_memory_budget_is_checked_before_loading(files, tmp_path):
    manager = make_manager(files, tmp_path, FakeClock(), memory_budget=1000)
    with pytest.raises(ServiceError, match="memory budget") as err:
        await manager.load("a")
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert manager.loaded() == []


async def test_configured_context_size_survives_a_restart(files, tmp_path):
    manager = make_manager(files, tmp_path, FakeClock())
    manager.settings.put("docker.io/ai/a:latest", ModelConfig(context_size=512, parallel=3))
    await manager.close()
    restarted = make_manager(files, tmp_path, FakeClock())
    entry = await restarted.load("a")
    assert entry.model.facts.context_size == 512 and entry.model.facts.parallel == 3
    await restarted.close()


async def test_generate_streams_text_with_usage_and_model_name(runner):
    stub, _ = runner
    chunks = [c async for c in stub.Generate(chat_request(max_tokens=12, ignore_eos=True))]
    assert chunks[0].model == "docker.io/ai/a:latest"
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 12 and chunks[-1].usage.prompt_tokens > 0
    running = (await stub.ListRunning(runner_pb2.ListRunningRequest())).runners
    assert [(r.model_name, r.context_size, r.slots, r.slots_busy) for r in running] == [
        ("docker.io/ai/a:latest", 256, 2, 0)
    ]
    status = await stub.Status(runner_pb2.StatusRequest())
    assert status.backends[0].name == "llama.cpp"


async def test_errors_are_statuses_that_say_what_to_fix(runner):
    stub, _ = runner
    with pytest.raises(grpc.aio.AioRpcError) as err:
        [c async for c in stub.Generate(chat_request(model="missing"))]
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    long = runner_pb2.GenerateRequest(model="a", prompt="x" * 400)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        [c async for c in stub.Generate(long)]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "context holds 256" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Configure(runner_pb2.ModelSettings(model="a", keep_alive="soon"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_queue_overflow_is_resource_exhausted_and_cancel_frees_slots(runner):
    stub, manager = runner
    entry = await manager.load("a")
    gate = threading.Event()
    decode = entry.model.decode
    entry.model.decode = lambda: gate.wait(10) and decode()  # hold the decode loop on its first step
    calls = [stub.Generate(chat_request(max_tokens=50)) for _ in range(3)]  # 2 slots + 1 queued
    for _ in range(500):
        if entry.scheduler.in_flight == 3:
            break
        await asyncio.sleep(0.01)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        [c async for c in stub.Generate(chat_request(max_tokens=1))]
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queue full: 1 requests waiting" in err.value.details()
    for call in calls:
        call.cancel()
    gate.set()
    for _ in range(500):
        if entry.scheduler.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert entry.scheduler.in_flight == 0 and entry.scheduler.busy_slots == 0


async def test_configure_persists_and_applies_on_reload(runner):
    stub, manager = runner
    [c async for c in stub.Generate(chat_request(max_tokens=2))]
    await stub.Configure(runner_pb2.ModelSettings(model="a", context_size=512, keep_alive="10m"))
    listed = (await stub.ListConfigurations(runner_pb2.ListConfigurationsRequest())).settings
    assert [(s.model, s.context_size) for s in listed] == [("docker.io/ai/a:latest", 512)]
    [c async for c in stub.Generate(chat_request(max_tokens=2))]
    running = (await stub.ListRunning(runner_pb2.ListRunningRequest())).runners
    assert [(r.context_size, r.keep_alive) for r in running] == [(512, "10m")]
    unloaded = await stub.UnloadModels(runner_pb2.UnloadModelsRequest(all=True))
    assert unloaded.unloaded_runners == 1 and manager.loaded() == []
