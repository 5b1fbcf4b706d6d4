"""The Runner's side of engine processes (engine_process.py): start, forward to, watch, stop.

Each loaded model's engine runs in a child process on a Unix socket in a private directory (0700).
Per-model calls are forwarded as raw bytes (engine_router.py), so the hop costs no (de)serialization,
over one connection to the engine (engine_pipe.py), which carries a decode step's chunks in one write.
A poll every POLL_SECONDS brings the engine's load (ListRunning, the gauges) and the metrics its
decode loop recorded; an engine whose decode step runs past `decode_timeout`, or that stops
answering for as long, is taken as hung and killed. When an engine exits by itself its calls end
with UNAVAILABLE and a message that says how it ended, and the lifecycle forgets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc

from modelrunner.common.errors import ServiceError
from modelrunner.runner.backends.base import ModelFacts
from modelrunner.runner.engine import EngineSpec, load_error
from modelrunner.runner.engine_pipe import CallFailed, EngineConnection
from modelrunner.runner.engine_process import EXIT_DECODE_LOOP, STATS_METHOD, spec_to_json
from modelrunner.runner.metrics import RunnerMetrics, replay
from modelrunner.runner.scheduler import Arrivals

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
STOP_SECONDS = 10.0  # SIGTERM, then SIGKILL
EXIT_WAIT_SECONDS = 1.0  # a call that broke off waits this long to tell an engine's exit from a hiccup
_ANSWER_LIMIT = 16 * 1024 * 1024  # the ready line carries the chat template
# Codes a call gets when the engine behind it went away (UNAVAILABLE: the connection was lost) or may
# be about to (UNKNOWN: an unexpected error in the engine), rather than refused it.
_BROKEN = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN})


@dataclass
class RemoteModel:
    facts: ModelFacts


@dataclass
class RemoteLoad:
    """The engine's scheduler as of its last poll."""

    busy_slots: int = 0
    queued: int = 0
    kv_cache_usage: float = 0.0


class ProcessLauncher:
    """Starts each engine in a process of its own."""

    def __init__(self, *, decode_timeout: float, log_level: str = "info", log_format: str = "json") -> None:
        self.decode_timeout = decode_timeout  # seconds; 0: never taken as hung
        self.log_level = log_level
        self.log_format = log_format

    async def start(
        self, spec: EngineSpec, *, metrics: RunnerMetrics | None, arrivals: Arrivals,
        on_exit: Callable[[EngineProcess], None],
    ) -> EngineProcess:
        engine = EngineProcess(spec, self, metrics, arrivals, on_exit)
        await engine.start()
        return engine


class EngineProcess:
    """One engine process, as the lifecycle and the router use it."""

    renderer = None  # chats are rendered in the engine
    stop_tokens: frozenset[int] = frozenset()

    def __init__(
        self, spec: EngineSpec, launcher: ProcessLauncher, metrics: RunnerMetrics | None, arrivals: Arrivals,
        on_exit: Callable[[EngineProcess], None],
    ) -> None:
        self.spec = spec
        self.name = spec.resolved.reference
        self.model: RemoteModel | None = None
        self.scheduler = RemoteLoad()
        self._launcher = launcher
        self._metrics = metrics
        self._arrivals = arrivals
        self._on_exit = on_exit
        self._dir = tempfile.mkdtemp(prefix="mr-engine-")  # 0700: only this user may connect
        self.socket = f"{self._dir}/sock"  # short: a Unix socket's path has at most 107 bytes
        self._proc: asyncio.subprocess.Process | None = None
        self._connection: EngineConnection | None = None
        self._exited = asyncio.Event()
        self._stopping = False
        self._killed_for = ""
        self._answered = time.monotonic()
        self._tasks: list[asyncio.Task] = []

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Spawns the process and waits for its model to load; on any failure nothing is left behind."""
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "modelrunner.runner.engine_process",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=_ANSWER_LIMIT,
            )
            spec = spec_to_json(
                self.spec, self.socket, log_level=self._launcher.log_level, log_format=self._launcher.log_format
            )
            self._proc.stdin.write(spec.encode() + b"\n")
            await self._proc.stdin.drain()
            answer = await self._proc.stdout.readline()
            if not answer:
                await self._proc.wait()
                raise load_error(self.name, f"its engine {self.how_it_ended()} while loading the model")
            message = json.loads(answer)
            if "error" in message:
                raise ServiceError(grpc.StatusCode[message["code"]], message["error"])
        except BaseException:  # a load error, or the request that asked for the load went away
            await self._reap()
            raise
        facts = message["facts"]
        self.model = RemoteModel(ModelFacts(**{**facts, "stop_tokens": frozenset(facts["stop_tokens"])}))
        try:
            self._connection = await EngineConnection.open(self.socket, self._connection_lost)
        except BaseException as exc:
            await self._reap()
            if isinstance(exc, OSError):
                raise load_error(self.name, f"its engine {self.how_it_ended()} before the Runner could connect") from exc
            raise
        self._answered = time.monotonic()
        self._tasks = [asyncio.create_task(self._watch()), asyncio.create_task(self._poll())]

    async def close(self) -> None:
        """Stops the engine (its calls end at once) and waits for it to be gone."""
        self._stopping = True
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            try:
                await asyncio.wait_for(self._proc.wait(), STOP_SECONDS)
            except TimeoutError:
                self._proc.kill()
        await self._reap()

    async def _reap(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
        if self._proc is not None:
            await self._proc.wait()
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        if self._connection is not None:
            self._connection.close()
        shutil.rmtree(self._dir, ignore_errors=True)
        self._exited.set()

    async def _watch(self) -> None:
        await self._proc.wait()
        if self._stopping:
            return
        log.error("engine exited", extra={"fields": {"model": self.name, "how": self.how_it_ended()}})
        self._on_exit(self)
        await self._reap()

    def how_it_ended(self) -> str:
        if self._killed_for:
            return f"was stopped because {self._killed_for}"
        code = self._proc.returncode if self._proc is not None else None
        if code is None:
            return "is running"
        if code < 0:
            return f"exited with signal {signal.Signals(-code).name}"
        if code == EXIT_DECODE_LOOP:
            return "exited because its decode loop failed"
        return f"exited with code {code}"

    # load and health ------------------------------------------------------------------------------
    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                await asyncio.wait_for(self.refresh(), self._stats_seconds() + 1.0)
            except Exception:  # one bad answer must not end the watch over this engine
                log.exception("engine poll failed", extra={"fields": {"model": self.name}})
            self._kill_if_silent()  # whatever the poll ran into: silence alone is the sign of a hung engine

    def _stats_seconds(self) -> float:
        timeout = self._launcher.decode_timeout
        return min(timeout, 5.0) if timeout else 5.0

    async def refresh(self) -> None:
        """Asks the engine for its load and its metrics; kills it when a decode step runs too long."""
        timeout = self._launcher.decode_timeout
        if self._exited.is_set():
            return
        try:
            stats = json.loads(await asyncio.wait_for(self._unary(STATS_METHOD, b""), self._stats_seconds()))
        except Exception:  # no answer, or one that is not the engine's: silence, which _poll judges
            return
        self._answered = time.monotonic()
        self.scheduler = RemoteLoad(stats["busy"], stats["queued"], stats["kv"])
        if self._metrics is not None:
            replay(self._metrics, stats["metrics"])
        if timeout and stats["decoding_for"] > timeout:
            self._kill(f"a decode step ran for over {timeout:g} s")

    def _connection_lost(self) -> None:
        """An engine the Runner cannot reach any more serves nobody: end it, so that the next request
        loads the model again. An engine that died closes its end first: give its exit the time to be
        seen, so that how it ended is what its callers are told."""
        if not self._stopping and not self._exited.is_set():
            asyncio.get_running_loop().call_later(EXIT_WAIT_SECONDS, self._kill_if_running, "its connection was lost")

    def _kill_if_running(self, reason: str) -> None:
        if not self._stopping and not self._exited.is_set():
            self._kill(reason)

    def _kill_if_silent(self) -> None:
        timeout = self._launcher.decode_timeout
        if timeout and not self._exited.is_set() and time.monotonic() - self._answered > timeout:
            self._kill(f"it did not answer for over {timeout:g} s")

    def _kill(self, reason: str) -> None:
        if self._proc.returncode is None and not self._killed_for:
            self._killed_for = reason
            log.error("killing the engine", extra={"fields": {"model": self.name, "reason": reason}})
            self._proc.kill()

    # calls ----------------------------------------------------------------------------------------
    async def stream(self, method: str, request: bytes) -> AsyncIterator[bytes]:
        """Forwards one server-streaming call; the caller going away cancels the engine's call."""
        calls = self._calls()
        try:
            async for chunk in calls.call(method, request, self._arrivals.count):
                yield chunk
        except CallFailed as exc:
            raise await self._failure(exc.code, exc.details) from None

    async def unary(self, method: str, request: bytes) -> bytes:
        try:
            return await self._unary(method, request)
        except CallFailed as exc:
            raise await self._failure(exc.code, exc.details) from None

    async def _unary(self, method: str, request: bytes) -> bytes:
        responses = [r async for r in self._calls().call(method, request, self._arrivals.count)]
        if len(responses) != 1:
            raise CallFailed(grpc.StatusCode.INTERNAL, f"the engine answered {method} with {len(responses)} messages")
        return responses[0]

    def _calls(self) -> EngineConnection:
        if self._connection is None or self._exited.is_set():
            raise self._gone()
        return self._connection

    async def _failure(self, code: grpc.StatusCode, details: str) -> ServiceError:
        """The engine's own status, or UNAVAILABLE saying how the engine ended when it did."""
        if code in _BROKEN:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exited.wait(), EXIT_WAIT_SECONDS)
        if self._stopping:
            return ServiceError(
                grpc.StatusCode.UNAVAILABLE, f"model {self.name} was unloaded while this request ran; retry"
            )
        if self._exited.is_set():
            return self._gone()
        return ServiceError(code, details or f"the engine of {self.name} failed")

    def _gone(self) -> ServiceError:
        return ServiceError(
            grpc.StatusCode.UNAVAILABLE,
            f"the engine of model {self.name} {self.how_it_ended()}; the next request loads it again",
        )
