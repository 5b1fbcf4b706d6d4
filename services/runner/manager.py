"""Model lifecycle: load on first use, keep-alive, at most N models, a memory budget, LRU eviction.

A model with requests in flight (a lease) is never evicted or expired. Time comes from an injectable
clock, so tests drive keep-alive and eviction with a fake one. The engines themselves come from a
launcher: in production each runs in a process of its own (engine_client.py); an engine that exits
is forgotten at once, so the next request for its model loads it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc

from modelrunner.common.errors import ServiceError
from modelrunner.common.gguf_info import human_size
from modelrunner.runner.backends.base import Backend, LoadOptions, MemoryEstimate
from modelrunner.runner.chat import ChatRenderer
from modelrunner.runner.engine import (
    Engine, EngineLauncher, EngineLoad, EngineModel, EngineSpec, LocalLauncher, load_error,
)
from modelrunner.runner.metrics import ModelLoad, RunnerLoad, RunnerMetrics
from modelrunner.common.keep_alive import parse_keep_alive
from modelrunner.runner.model_settings import SettingsStore
from modelrunner.runner.resolver import ModelResolver, ResolvedModel
from modelrunner.runner.scheduler import Arrivals

log = logging.getLogger(__name__)
Clock = Callable[[], float]
# A loaded engine is shared by every name of one model whose settings give the same load options: two
# tags of a model share one copy, and a name configured otherwise gets an engine of its own.
EngineKey = tuple[str, LoadOptions]


@dataclass
class ManagerConfig:
    max_loaded: int = 3
    memory_budget: int = 0  # bytes; 0: no limit
    keep_alive: str = "5m"
    defaults: LoadOptions = field(default_factory=LoadOptions)
    max_queue: int = 64
    prompt_cache: bool = True  # finished requests' tokens stay in their slots for later prompts


@dataclass
class Loaded:
    """A model in memory and what the lifecycle needs to know about it."""

    resolved: ResolvedModel
    key: EngineKey
    engine: Engine
    memory: MemoryEstimate
    keep_alive: float | None  # seconds; None: forever
    keep_alive_text: str
    last_used: float
    leases: int = 0
    stale: bool = False  # its settings changed: reload when idle

    @property
    def name(self) -> str:
        return self.resolved.reference

    @property
    def model(self) -> EngineModel:
        return self.engine.model

    @property
    def scheduler(self) -> EngineLoad:
        return self.engine.scheduler

    @property
    def renderer(self) -> ChatRenderer | None:
        return self.engine.renderer

    @property
    def stop_tokens(self) -> frozenset[int]:
        return self.engine.stop_tokens

    def expires_at(self) -> float | None:
        if self.keep_alive is None or self.leases:
            return None
        return self.last_used + self.keep_alive


class ModelManager:
    def __init__(
        self,
        backend: Backend,
        resolver: ModelResolver,
        settings: SettingsStore,
        config: ManagerConfig,
        *,
        clock: Clock = time.time,
        metrics_factory: Callable[[Callable], RunnerMetrics] | None = None,
        launcher: EngineLauncher | None = None,
    ) -> None:
        self.backend = backend
        self.launcher = launcher or LocalLauncher(backend)
        self.resolver = resolver
        self.settings = settings
        self.config = config
        self.clock = clock
        self._loaded: dict[EngineKey, Loaded] = {}
        self._loading: Counter[str] = Counter()  # names with a load in progress (one per engine)
        self._locks: dict[EngineKey, asyncio.Lock] = {}
        self._room = asyncio.Lock()  # one eviction-and-load decision at a time
        self.arrivals = Arrivals()  # requests resolving their model's name, for every model
        self.metrics = metrics_factory(self._snapshot) if metrics_factory else None

    # queries ------------------------------------------------------------------------------------
    def loaded(self) -> list[Loaded]:
        return list(self._loaded.values())

    def is_loading(self, reference: str) -> bool:
        return self._loading[reference] > 0

    async def refresh(self) -> None:
        """Brings every engine's load (busy slots, queue) up to date."""
        await asyncio.gather(*(e.engine.refresh() for e in self.loaded()))

    def _snapshot(self) -> RunnerLoad:
        """Each name's load, summed over its engines (a name with num_ctx requests may have several)."""
        by_name: dict[str, list[Loaded]] = {}
        for e in self.loaded():
            by_name.setdefault(e.name, []).append(e)
        models = []
        for name, entries in by_name.items():
            kv_bytes = sum(e.memory.kv_cache_bytes for e in entries)
            used = sum(e.scheduler.kv_cache_usage * e.memory.kv_cache_bytes for e in entries)
            models.append(ModelLoad(
                name, sum(e.scheduler.busy_slots for e in entries), sum(e.scheduler.queued for e in entries),
                sum(e.memory.total_bytes for e in entries), used / kv_bytes if kv_bytes else 0.0, kv_bytes,
            ))
        return RunnerLoad(models, sorted(self._loading), self.config.max_loaded)

    # leases -------------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def acquire(self, name: str, keep_alive: str = "", context_size: int = 0) -> AsyncIterator[Loaded]:
        """The loaded model for `name` (loading it if needed), held for the duration of the block; with
        a `context_size`, the one loaded with that context (a request's own, Ollama's num_ctx)."""
        keep = self._keep_alive(keep_alive) if keep_alive else None
        entry = await self._get(name, context_size)
        entry.leases += 1
        if keep_alive:
            entry.keep_alive, entry.keep_alive_text = keep, keep_alive
        try:
            yield entry
        finally:
            entry.leases -= 1
            entry.last_used = self.clock()
            if entry.leases == 0 and (entry.keep_alive == 0 or entry.stale):
                await self._unload(entry)

    async def load(self, name: str, keep_alive: str = "", context_size: int = 0) -> Loaded:
        async with self.acquire(name, keep_alive, context_size) as entry:
            return entry

    async def _get(self, name: str, context_size: int = 0) -> Loaded:
        with self.arrivals.arriving():  # an idle scheduler waits for a burst's requests still resolving
            resolved = await self.resolver.resolve(name)
        options = self.settings.get(resolved.reference).load_options(self.config.defaults)
        if context_size:
            try:
                options = await asyncio.to_thread(self.backend.request_options, list(resolved.gguf_paths), options,
                                                  context_size)
            except ValueError as exc:
                raise load_error(resolved.reference, exc) from exc
        key = (resolved.model_id, options)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            entry = self._loaded.get(key)
            if entry is not None and not entry.stale:
                return entry
            if entry is not None:  # its settings changed
                await self._unload_when_idle(entry)
            self._loading[resolved.reference] += 1
            try:
                return await self._load(resolved, key)
            finally:
                self._loading[resolved.reference] -= 1
                if not self._loading[resolved.reference]:
                    del self._loading[resolved.reference]

    async def _unload_when_idle(self, entry: Loaded) -> None:
        if entry.leases == 0:
            await self._unload(entry)
        else:
            entry.stale = True
            self._loaded.pop(entry.key, None)

    async def _load(self, resolved: ResolvedModel, key: EngineKey) -> Loaded:
        user = self.settings.get(resolved.reference)
        options = key[1]
        keep_text = user.keep_alive or self.config.keep_alive
        keep_alive = self._keep_alive(keep_text)
        try:
            memory = await asyncio.to_thread(self.backend.estimate_memory, list(resolved.gguf_paths), options)
        except ValueError as exc:
            raise load_error(resolved.reference, exc) from exc
        async with self._room:
            await self._make_room(resolved.reference, memory)
            started = time.perf_counter()
            spec = EngineSpec(resolved, options, self.config.max_queue, self.config.prompt_cache)
            engine = await self.launcher.start(spec, metrics=self.metrics, arrivals=self.arrivals, on_exit=self._forget)
            entry = Loaded(
                resolved=resolved,
                key=key,
                engine=engine,
                memory=memory,
                keep_alive=keep_alive,
                keep_alive_text=keep_text,
                last_used=self.clock(),
            )
            self._loaded[key] = entry
        facts = engine.model.facts
        log.info(
            "model loaded",
            extra={"fields": {
                "model": resolved.reference, "seconds": round(time.perf_counter() - started, 3),
                "context": facts.context_size, "slots": facts.parallel,
                "gpu_layers": facts.gpu_layers, "memory": memory.total_bytes,
            }},
        )
        return entry

    def _forget(self, engine: Engine) -> None:
        """The engine exited: the next request for its model loads the model again."""
        for key, entry in list(self._loaded.items()):
            if entry.engine is engine:
                del self._loaded[key]

    async def _make_room(self, reference: str, memory: MemoryEstimate) -> None:
        budget = self.config.memory_budget
        if budget and memory.total_bytes > budget:
            raise ServiceError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{reference} needs about {human_size(memory.total_bytes)} (weights "
                f"{human_size(memory.weights_bytes)} + KV cache {human_size(memory.kv_cache_bytes)}) but the "
                f"memory budget is {human_size(budget)}: lower its context size or raise the budget",
            )
        while self._loaded and (
            len(self._loaded) >= self.config.max_loaded
            or (budget and self._used() + memory.total_bytes > budget)
        ):
            idle = [e for e in self._loaded.values() if e.leases == 0]
            if not idle:
                busy = ", ".join(sorted(e.name for e in self._loaded.values()))
                raise ServiceError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"cannot load {reference}: no room (max {self.config.max_loaded} models, budget "
                    f"{human_size(budget) if budget else 'unlimited'}) and every loaded model is in use "
                    f"({busy}); retry later",
                )
            victim = min(idle, key=lambda e: e.last_used)
            log.info("evicting", extra={"fields": {"model": victim.name, "for": reference}})
            await self._unload(victim)

    def _used(self) -> int:
        return sum(e.memory.total_bytes for e in self._loaded.values())

    def _keep_alive(self, text: str) -> float | None:
        try:
            return parse_keep_alive(text)
        except ValueError as exc:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc

    # unloading ----------------------------------------------------------------------------------
    async def _unload(self, entry: Loaded) -> None:
        if self._loaded.get(entry.key) is entry:
            del self._loaded[entry.key]
        await entry.engine.close()
        log.info("model unloaded", extra={"fields": {"model": entry.name}})

    async def unload(self, names: list[str] | None) -> int:
        """Unloads the named models (all when None); those in use finish their requests first."""
        count = 0
        for entry in self.loaded():
            if names is None or entry.name in names:
                await self._unload_when_idle(entry)
                count += 1
        return count

    def mark_stale(self, reference: str) -> None:
        """Its settings changed: reload on next use (now if idle; one in use is set aside, to be unloaded
        when its last request ends, so that it holds no place the new settings' engine needs)."""
        for entry in self.loaded():
            if entry.name == reference:
                entry.stale = True
                if entry.leases:
                    self._loaded.pop(entry.key, None)

    async def expire_idle(self) -> list[str]:
        """Unloads idle models whose keep-alive has passed (and stale idle ones); returns their names."""
        now = self.clock()
        gone = []
        for entry in self.loaded():
            expires = entry.expires_at()
            if entry.leases == 0 and (entry.stale or (expires is not None and expires <= now)):
                await self._unload(entry)
                gone.append(entry.name)
        return gone

    async def run_expiry(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.expire_idle()

    async def close(self) -> None:
        for entry in self.loaded():
            await self._unload(entry)
