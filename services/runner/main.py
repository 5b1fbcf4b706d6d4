"""`python -m modelrunner.runner`: the Runner process (flags and MODELRUNNER_* variables, see --help)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from grpc_health.v1 import health_pb2

from modelrunner.common import config, memory
from modelrunner.common.config import Setting
from modelrunner.common.server import GrpcService, grace_seconds, init_process, serve
from modelrunner.runner.backends.base import LoadOptions
from modelrunner.runner.backends.llamacpp import LlamaCppBackend
from modelrunner.runner.engine_client import ProcessLauncher
from modelrunner.runner.engine_router import add_runner_to_server
from modelrunner.runner.manager import ManagerConfig, ModelManager
from modelrunner.runner.metrics import RunnerMetrics
from modelrunner.common.keep_alive import parse_keep_alive
from modelrunner.runner.model_settings import SettingsStore, parse_step_factor
from modelrunner.runner.preload import parse_preload, preload
from modelrunner.runner.resolver import StoreResolver
from modelrunner.v1 import runner_pb2

SERVICE_NAME = runner_pb2.DESCRIPTOR.services_by_name["Runner"].full_name

STATE_DIR = Setting("runner-state-dir", "", "the Runner's persisted settings (default: DATA_DIR/runner)")
PARALLEL = Setting(
    "runner-parallel", str(LoadOptions.parallel),
    "sequences decoded together per model (slots; the unified KV cache spends cells on real tokens only, so a slot costs nothing until used)",
)
CONTEXT_SIZE = Setting("runner-context-size", "0", "default KV cache tokens per model, shared by its slots (0: min(trained, 8192))")
KEEP_ALIVE = Setting("runner-keep-alive", "5m", "how long an idle model stays loaded ('0': unload at once, '-1': forever)")
MAX_MODELS = Setting("runner-max-models", "3", "models loaded at most at once")
MEMORY_BUDGET = Setting("runner-memory-budget", "0", "bytes all loaded models may take (0: 9 tenths of the RAM available at start)")
MAX_QUEUE = Setting("runner-max-queue", "64", "requests waiting per model before RESOURCE_EXHAUSTED")
THREADS = Setting("runner-threads", "0", "CPU threads per decode (0: the cores this process may use)")
BATCH_SIZE = Setting("runner-batch-size", "2048", "tokens per decode step (prompt chunks + running sequences)")
PREFILL_STEP_FACTOR = Setting(
    "runner-prefill-step-factor", str(LoadOptions.prefill_step_factor),
    "while sequences decode, a step carrying prompt tokens lasts at most this many plain decode steps (0: no limit)",
)
PRELOAD = Setting(
    "runner-preload", "",
    "models (comma-separated) to load before the Runner service reports SERVING; waited for if not in the Store yet",
)
DECODE_TIMEOUT = Setting(
    "runner-decode-timeout", "120",
    "seconds one decode step (per 512 tokens it carries) or an engine's silence may last before the engine is taken as hung and killed (0: never)",
)
PROMPT_CACHE = Setting(
    "runner-prompt-cache", "on",
    "on: a finished request's tokens stay in its slot's KV cache, and a request starting with them skips their prefill",
)

SETTINGS = (
    config.LISTEN, config.STORE_ADDR, config.DATA_DIR, STATE_DIR, PARALLEL, CONTEXT_SIZE, KEEP_ALIVE,
    MAX_MODELS, MEMORY_BUDGET, MAX_QUEUE, THREADS, BATCH_SIZE, PREFILL_STEP_FACTOR, PROMPT_CACHE, DECODE_TIMEOUT, PRELOAD, *config.COMMON,
)


def available_memory() -> int:
    """What this container may still allocate (its cgroup's headroom, else MemAvailable), or 0 (no limit)
    where neither is known: a budget from the host's memory would let the cgroup OOM-kill the Runner."""
    return memory.available_memory()


def manager_config(args) -> ManagerConfig:
    def positive(name: str, value: str) -> int:
        number = int(value)
        if number < 0:
            raise SystemExit(f"modelrunner runner: --{name} must be >= 0, not {value}")
        return number

    if args.runner_prompt_cache not in ("on", "off"):
        raise SystemExit(f"modelrunner runner: --runner-prompt-cache takes on or off, not {args.runner_prompt_cache!r}")
    try:
        parse_keep_alive(args.runner_keep_alive)
        budget = positive("runner-memory-budget", args.runner_memory_budget) or int(available_memory() * 0.9)
        return ManagerConfig(
            max_loaded=max(1, positive("runner-max-models", args.runner_max_models)),
            memory_budget=budget,
            keep_alive=args.runner_keep_alive,
            max_queue=positive("runner-max-queue", args.runner_max_queue),
            prompt_cache=args.runner_prompt_cache == "on",
            defaults=LoadOptions(
                context_size=positive("runner-context-size", args.runner_context_size),
                parallel=max(1, positive("runner-parallel", args.runner_parallel)),
                threads=positive("runner-threads", args.runner_threads),
                batch_size=max(1, positive("runner-batch-size", args.runner_batch_size)),
                prefill_step_factor=parse_step_factor(args.runner_prefill_step_factor, "--runner-prefill-step-factor"),
            ),
        )
    except ValueError as exc:
        raise SystemExit(f"modelrunner runner: {exc}") from None


def launcher(args) -> ProcessLauncher:
    try:
        timeout = float(args.runner_decode_timeout)
    except ValueError:
        timeout = -1.0
    if not timeout >= 0:
        raise SystemExit(
            f"modelrunner runner: --runner-decode-timeout takes seconds >= 0, not {args.runner_decode_timeout!r}"
        )
    return ProcessLauncher(decode_timeout=timeout, log_level=args.log_level, log_format=args.log_format)


async def run(args) -> None:
    state_dir = Path(args.runner_state_dir).expanduser() if args.runner_state_dir else config.data_dir(args.data_dir) / "runner"
    resolver = StoreResolver(args.store_addr)
    manager = ModelManager(
        LlamaCppBackend(), resolver, SettingsStore(state_dir), manager_config(args), metrics_factory=RunnerMetrics,
        launcher=launcher(args),
    )
    expiry = asyncio.create_task(manager.run_expiry())

    async def on_stop() -> None:
        expiry.cancel()
        await manager.close()
        await resolver.close()

    def register(server) -> None:
        add_runner_to_server(manager, server)

    async def on_start(service: GrpcService) -> None:
        await preload(manager, models)
        await service.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)

    models = parse_preload(args.runner_preload)

    await serve(
        "runner",
        args.listen or config.RUNNER_ADDR.value(),
        [SERVICE_NAME],
        register,
        grace=grace_seconds(args),
        on_stop=on_stop,
        on_start=on_start if models else None,
        hold=(SERVICE_NAME,) if models else (),
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = config.parse("The Model Runner Runner: loads models and serves them with continuous batching.", SETTINGS, argv)
    init_process("runner", args)
    asyncio.run(run(args))
