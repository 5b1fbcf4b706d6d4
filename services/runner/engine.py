"""One loaded model's engine: the backend's model, its scheduler (decode thread) and its chat format.

The Runner runs each engine in a process of its own (engine_process.py, driven by engine_client.py)
so that a native abort costs only that model's streams; tests of the lifecycle run it in-process.
Both build it here, so the two cannot drift apart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from modelrunner.common.errors import ServiceError
from modelrunner.runner.backends.base import Backend, LoadedModel, LoadOptions, ModelFacts
from modelrunner.runner.chat import ChatRenderer, TemplateError, choose_format
from modelrunner.runner.metrics import RunnerMetrics
from modelrunner.runner.model_settings import sampling_defaults
from modelrunner.runner.resolver import ResolvedModel
from modelrunner.runner.scheduler import Arrivals, Scheduler

log = logging.getLogger(__name__)


class EngineModel(Protocol):
    facts: ModelFacts


class EngineLoad(Protocol):
    """What the lifecycle and ListRunning read of an engine's scheduler."""

    @property
    def busy_slots(self) -> int: ...

    @property
    def queued(self) -> int: ...

    @property
    def kv_cache_usage(self) -> float: ...


class Engine(Protocol):
    """A loaded model's engine as the lifecycle holds it: here (LocalEngine) or in a process of its own
    (engine_client.EngineProcess, whose model has its facts only: its RPCs are forwarded to it)."""

    model: EngineModel
    scheduler: EngineLoad
    renderer: ChatRenderer | None
    stop_tokens: frozenset[int]

    async def refresh(self) -> None:
        """Brings `scheduler` up to date."""

    async def close(self) -> None: ...


@dataclass(frozen=True)
class EngineSpec:
    """Everything an engine needs to start, besides the backend."""

    resolved: ResolvedModel
    options: LoadOptions
    max_queue: int
    keep_prompts: bool


class EngineLauncher(Protocol):
    async def start(
        self,
        spec: EngineSpec,
        *,
        metrics: RunnerMetrics | None,
        arrivals: Arrivals,
        on_exit: Callable[[Engine], None],
    ) -> Engine:
        """Loads the model; raises ServiceError (FAILED_PRECONDITION) when it cannot be loaded.
        `on_exit(engine)` is called when a started engine ends by itself (a crash)."""


@dataclass
class LocalEngine:
    """An engine in this process: the backend's own model and a scheduler over it."""

    model: LoadedModel
    scheduler: Scheduler
    renderer: ChatRenderer | None
    stop_tokens: frozenset[int]
    sampling_defaults: Mapping[str, float] = field(default_factory=dict)  # for what a request leaves unset

    async def refresh(self) -> None:
        """Always up to date: `scheduler` is the scheduler itself."""

    async def close(self) -> None:
        await asyncio.to_thread(self.scheduler.close)


def load_error(reference: str, reason: object) -> ServiceError:
    return ServiceError(grpc.StatusCode.FAILED_PRECONDITION, f"cannot load {reference}: {reason}")


def start_local_engine(backend: Backend, spec: EngineSpec, metrics, arrivals: Arrivals | None) -> LocalEngine:
    """Loads the model and starts its decode thread (blocking, seconds)."""
    resolved = spec.resolved
    try:
        model = backend.load(list(resolved.gguf_paths), spec.options)
    except ValueError as exc:
        raise load_error(resolved.reference, exc) from exc
    try:
        renderer, stops = chat_for(resolved, model)
    except TemplateError:
        renderer, stops = None, frozenset()
        log.warning("unusable chat template", extra={"fields": {"model": resolved.reference}})
    scheduler = Scheduler(
        model, name=resolved.reference, max_queue=spec.max_queue, metrics=metrics, arrivals=arrivals,
        keep_prompts=spec.keep_prompts, prefill_step_factor=spec.options.prefill_step_factor,
    )
    return LocalEngine(model, scheduler, renderer, stops, model_sampling_defaults(renderer, spec.options))


# Small models loop: the same phrase until max_tokens. Measured (bench/sampling_defaults.py, RESULTS.md):
# Gemma 3 270M, a base model, loops in 100% of answers at repeat_penalty 1.0, 12% at 1.1, 0% at 1.2;
# SmolLM2 135M Instruct loops when greedy at 1.0 and answers at 1.1. Runtime flags (--repeat-penalty,
# --temp, ...) override these per model, and a request's own values override both.
BASE_MODEL_REPEAT_PENALTY = 1.2
CHAT_MODEL_REPEAT_PENALTY = 1.1


def model_sampling_defaults(renderer: ChatRenderer | None, options: LoadOptions) -> dict[str, float]:
    """A base model (no chat template of its own) gets the stronger repeat penalty."""
    base = renderer is None or renderer.format.source.startswith("builtin:")
    penalty = BASE_MODEL_REPEAT_PENALTY if base else CHAT_MODEL_REPEAT_PENALTY
    return {"repeat_penalty": penalty, **sampling_defaults(options.runtime_flags)}


def chat_for(resolved: ResolvedModel, model: LoadedModel) -> tuple[ChatRenderer, frozenset[int]]:
    fmt = choose_format(model.facts.chat_template, resolved.chat_template, model.facts.architecture)
    renderer = ChatRenderer(fmt, model.facts.bos_text, model.facts.eos_text)
    stops = {model.token_for_text(s) for s in fmt.stop}
    return renderer, frozenset(t for t in stops if t is not None)


class LocalLauncher:
    """Engines inside the Runner's own process (the lifecycle's unit tests)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def start(self, spec: EngineSpec, *, metrics, arrivals: Arrivals, on_exit) -> LocalEngine:
        return await asyncio.to_thread(start_local_engine, self.backend, spec, metrics, arrivals)
