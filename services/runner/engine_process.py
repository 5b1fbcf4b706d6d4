"""`python -m modelrunner.runner.engine_process`: one loaded model's engine in a process of its own.

The Runner (engine_client.py) starts one per loaded model, so that a native abort (GGML_ASSERT,
std::terminate), an OOM kill or a hung decode costs that model's streams only. The process reads its
spec as one JSON line on stdin, loads the model, serves the Runner service's per-model calls for it
(the same RunnerService code, over a one-model manager) on a Unix socket in the private directory
the Runner made for it, and answers one JSON line on its original stdout: the model's facts, or the
load error. It also serves `Stats` (load, how long the current decode step has run, the metrics its
decode loop recorded since the last call), which the Runner polls. The calls cross as engine_pipe.py
frames, not gRPC.

It ends when the Runner says so (SIGTERM), when the Runner dies (PR_SET_PDEATHSIG, and EOF on stdin),
and when its decode loop ends by itself (exit code EXIT_DECODE_LOOP): an engine that cannot decode
must not take work.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TextIO

from modelrunner.common import lifeline
from modelrunner.common.errors import ServiceError
from modelrunner.common.logs import setup_logging
from modelrunner.runner.backends.base import Backend, LoadedModel, LoadOptions
from modelrunner.runner.backends.llamacpp import LlamaCppBackend
from modelrunner.runner.engine import EngineSpec, LocalEngine, start_local_engine
from modelrunner.runner.engine_pipe import CallContext, Handler, per_model_methods, serve_calls, servicer_handlers
from modelrunner.runner.manager import Loaded
from modelrunner.runner.metrics import RecordedMetrics
from modelrunner.runner.resolver import ResolvedModel
from modelrunner.runner.scheduler import Arrivals
from modelrunner.runner.service import RunnerService

log = logging.getLogger(__name__)

STATS_METHOD = "Stats"  # beside the Runner service's per-model methods
EXIT_DECODE_LOOP = 70


def spec_to_json(spec: EngineSpec, socket: str, *, log_level: str, log_format: str) -> str:
    return json.dumps({
        "socket": socket,
        "parent_pid": os.getpid(),
        "log_level": log_level,
        "log_format": log_format,
        "resolved": dataclasses.asdict(spec.resolved),
        "options": dataclasses.asdict(spec.options),
        "max_queue": spec.max_queue,
        "keep_prompts": spec.keep_prompts,
    })


def spec_from_json(data: dict) -> EngineSpec:
    resolved = data["resolved"]
    options = data["options"]
    return EngineSpec(
        resolved=ResolvedModel(**{**resolved, "gguf_paths": tuple(resolved["gguf_paths"])}),
        options=LoadOptions(**{**options, "runtime_flags": tuple(options["runtime_flags"])}),
        max_queue=data["max_queue"],
        keep_prompts=data["keep_prompts"],
    )


class ForwardedArrivals(Arrivals):
    """Arrivals as the Runner counts them: each forwarded request carries the Runner's count, so the
    scheduler here gathers a burst as it would in the Runner's own process."""

    def report(self, count: int) -> None:
        self.count = count
        if not count:
            self._wake()


# The Runner's decode timeout is for a step of up to this many tokens; a bigger step is given as many
# timeouts as it carries such shares (a 2048-token prompt step of a large model on a few CPU cores can
# rightly take minutes, each 512 tokens of it no longer than a 512-token step would).
TIMEOUT_TOKENS = 512


class DecodeClock:
    """Times the model's decode calls, so a hung one is seen (the Runner kills this process)."""

    def __init__(self, model: LoadedModel) -> None:
        self._started = 0.0
        self._shares = 1.0
        decode = model.decode

        def timed() -> int:
            self._shares = max(1.0, model.batch_tokens / TIMEOUT_TOKENS)
            self._started = time.monotonic()
            try:
                return decode()
            finally:
                self._started = 0.0

        model.decode = timed  # type: ignore[method-assign]

    def running_for(self) -> float:
        """Seconds the current step has run, per TIMEOUT_TOKENS tokens it carries; 0 between steps."""
        started = self._started
        return (time.monotonic() - started) / self._shares if started else 0.0


class OneModel:
    """The part of ModelManager that RunnerService's per-model RPCs use, over this process's model."""

    def __init__(self, entry: Loaded, backend: Backend) -> None:
        self.entry = entry
        self.backend = backend

    @contextlib.asynccontextmanager
    async def acquire(self, name: str, keep_alive: str = "", context_size: int = 0) -> AsyncIterator[Loaded]:
        yield self.entry


def _stats_handler(engine: LocalEngine, clock: DecodeClock, recorded: RecordedMetrics) -> Handler:
    async def stats(_request: bytes, _context: CallContext) -> AsyncIterator[bytes]:
        scheduler = engine.scheduler
        yield json.dumps({
            "busy": scheduler.busy_slots,
            "queued": scheduler.queued,
            "kv": scheduler.kv_cache_usage,
            "decoding_for": clock.running_for(),
            "metrics": recorded.drain(),
        }).encode()

    return stats


def _facts(engine: LocalEngine) -> dict:
    facts = dataclasses.asdict(engine.model.facts)
    facts["stop_tokens"] = sorted(facts["stop_tokens"])
    return facts


def _answer(ready: TextIO, message: dict) -> None:
    ready.write(json.dumps(message) + "\n")
    ready.close()


def _remove_socket(socket: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(socket)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(socket))


def _die_with(parent_pid: int, socket: str) -> None:
    """Ends this process when the Runner ends, whichever way it ends (SIGKILL included)."""

    def leave(*_args) -> None:
        _remove_socket(socket)
        os._exit(0)

    signal.signal(signal.SIGTERM, leave)
    # Ctrl-C reaches the whole process group: the Runner drains its calls then stops this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not lifeline.die_with(parent_pid):
        leave()

    def watch_stdin() -> None:
        sys.stdin.buffer.read()  # EOF: the Runner closed its end or died
        leave()

    threading.Thread(target=watch_stdin, name="parent-watch", daemon=True).start()


def _first_to_go_when_memory_runs_out() -> None:
    """Short of memory, the kernel is to kill an engine (its model's streams) rather than the Runner."""
    with contextlib.suppress(OSError):
        Path("/proc/self/oom_score_adj").write_text("500")


def _watch_decode_loop(engine: LocalEngine, socket: str) -> None:
    engine.scheduler.wait_decode_loop()
    log.error(
        "the decode loop ended: this engine takes no more work", extra={"fields": {"model": engine.scheduler.name}}
    )
    _remove_socket(socket)
    os._exit(EXIT_DECODE_LOOP)


async def serve(data: dict, ready: TextIO) -> None:
    spec = spec_from_json(data)
    socket = data["socket"]
    backend = LlamaCppBackend()
    arrivals = ForwardedArrivals()
    recorded = RecordedMetrics()
    try:
        engine = start_local_engine(backend, spec, recorded, arrivals)
    except ServiceError as exc:
        _answer(ready, {"error": exc.message, "code": exc.code.name})
        return
    clock = DecodeClock(engine.model)
    entry = Loaded(
        resolved=spec.resolved, key=(spec.resolved.model_id, spec.options), engine=engine,
        memory=engine.model.memory, keep_alive=None, keep_alive_text="",
        last_used=time.time(),
    )
    handlers = servicer_handlers(RunnerService(OneModel(entry, backend)), per_model_methods())
    handlers[STATS_METHOD] = _stats_handler(engine, clock, recorded)
    server = await serve_calls(socket, handlers, arrivals.report)
    threading.Thread(target=_watch_decode_loop, args=(engine, socket), name="decode-watch", daemon=True).start()
    _answer(ready, {"facts": _facts(engine)})
    async with server:
        await server.serve_forever()


def main() -> None:
    ready = os.fdopen(os.dup(1), "w")  # the one answer; anything else written to stdout goes to stderr
    os.dup2(2, 1)
    data = json.loads(sys.stdin.readline())
    _die_with(data["parent_pid"], data["socket"])
    _first_to_go_when_memory_runs_out()
    setup_logging("runner-engine", data["log_level"], data["log_format"])
    try:
        asyncio.run(serve(data, ready))
    finally:
        _remove_socket(data["socket"])


if __name__ == "__main__":
    main()
