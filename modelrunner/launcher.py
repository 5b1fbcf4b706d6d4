"""`modelrunner up`: runs the four services as child processes and supervises them.

The launcher starts every service in its own session (so a Ctrl-C in the terminal reaches only the
launcher, which then stops the children in order: the gateway first, so no new request reaches a
backend that is going away), waits until each reports grpc.health.v1 SERVING and the gateway's
/healthz answers, imports the default model on first start, and records the stack in
`run/stack.json` for `status`, `logs` and `down`. In the background (`up` without -f) the same
supervisor runs detached; `down` sends it SIGTERM.

Once the stack is up, a service that exits (a crash, an OOM kill, a SIGKILL) is restarted after an
exponential backoff, its exit code or signal logged and recorded for `status`; one that keeps exiting
(a crash loop) makes the launcher give up, say so and stop the stack, rather than hide it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from modelrunner import probes
from modelrunner.common import config
from modelrunner.common.lifeline import PARENT_PID_ENV
from modelrunner.stack import HOST, ServiceSpec, Stack, StackLayout, StackState, pid_alive

Say = Callable[[str], None]
LOG_TAIL_LINES = 20


class LaunchError(Exception):
    """The stack could not start; the message says why and what to do."""


class _Stop(Exception):
    """SIGTERM or SIGHUP arrived: stop the stack like Ctrl-C does."""


def tail(path: Path, offset: int = 0, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log written after `offset`."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


@dataclass(frozen=True)
class RestartPolicy:
    """Backoff between restarts of a service that exited: `initial_delay`, doubling up to `max_delay`.
    More than `max_restarts` exits within `window` seconds is a crash loop: the launcher gives up."""

    initial_delay: float = 0.5
    max_delay: float = 30.0
    max_restarts: int = 5
    window: float = 120.0

    def delay(self, recent_exits: int) -> float:
        return min(self.max_delay, self.initial_delay * 2 ** max(0, recent_exits - 1))


def exit_status(code: int | None) -> str:
    """Popen's returncode in words: "code 3", or "signal 9 (SIGKILL)" for a negative one."""
    if code is None or code >= 0:
        return f"code {code}"
    try:
        return f"signal {-code} ({signal.Signals(-code).name})"
    except ValueError:
        return f"signal {-code}"


@dataclass
class Child:
    spec: ServiceSpec
    process: subprocess.Popen
    log: Path
    log_offset: int
    restarts: int = 0
    last_exit: str = ""  # "code 1" | "signal 9 (SIGKILL)", with the time, of the last unexpected exit
    exits: list[float] = field(default_factory=list)  # monotonic times of the exits within the policy's window
    restart_at: float | None = None  # when the exited process is due to start again

    def describe_exit(self) -> str:
        return (f"{self.spec.name} exited ({exit_status(self.process.returncode)}); last lines of {self.log}:\n"
                f"{tail(self.log, self.log_offset)}")

    def record(self) -> dict:
        """This service as run/stack.json records it (for `status` and `down`)."""
        return {"pid": self.process.pid, "addr": self.spec.addr, "log": str(self.log), "restarts": self.restarts,
                "last_exit": self.last_exit, "state": "running" if self.restart_at is None else "restarting"}


class Supervisor:
    """Starts, watches, restarts and stops the stack's processes."""

    def __init__(self, stack: Stack, policy: RestartPolicy | None = None) -> None:
        self.stack = stack
        self.policy = policy or RestartPolicy()
        self.children: list[Child] = []

    def _launch(self, spec: ServiceSpec) -> tuple[subprocess.Popen, Path, int]:
        log_path = self.stack.layout.log_file(spec.name)
        with log_path.open("ab") as log:
            offset = log.tell()
            process = subprocess.Popen(
                spec.command(),
                env={**self.stack.env(spec), PARENT_PID_ENV: str(os.getpid())},  # the service dies with us
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return process, log_path, offset

    def spawn(self) -> None:
        self.stack.layout.logs_dir.mkdir(parents=True, exist_ok=True)
        for spec in self.stack.services:
            self.children.append(Child(spec, *self._launch(spec)))

    def tend(self, say: Say, now: float | None = None) -> Child | None:
        """One supervision step: notes each service that exited and schedules its restart, starts those
        due; returns a service in a crash loop (the caller gives up), else None."""
        now = time.monotonic() if now is None else now
        for child in self.children:
            if child.restart_at is None and child.process.poll() is not None:
                child.exits = [t for t in child.exits if now - t < self.policy.window] + [now]
                child.last_exit = f"{exit_status(child.process.returncode)} at {time.strftime('%H:%M:%S')}"
                if len(child.exits) > self.policy.max_restarts:
                    say(f"error: {child.describe_exit()}\nerror: {child.spec.name} exited {len(child.exits)} times "
                        f"in {self.policy.window:.0f}s: giving up (crash loop); see {child.log}")
                    return child
                delay = self.policy.delay(len(child.exits))
                child.restart_at = now + delay
                say(f"{child.describe_exit()}\nrestarting {child.spec.name} in {delay:.1f}s")
            elif child.restart_at is not None and now >= child.restart_at:
                child.process, child.log, child.log_offset = self._launch(child.spec)
                child.restarts += 1
                child.restart_at = None
                say(f"{child.spec.name} restarted (pid {child.process.pid}, restart {child.restarts})")
        return None

    def records(self) -> dict[str, dict]:
        return {c.spec.name: c.record() for c in self.children}

    def exited(self) -> Child | None:
        """A child that has exited, if any."""
        return next((c for c in self.children if c.process.poll() is not None), None)

    def wait_healthy(self, timeout: float) -> None:
        """Blocks until every service is SERVING and /healthz answers, or raises LaunchError."""
        deadline = time.monotonic() + timeout
        pending = {c.spec.name: c.spec.addr for c in self.children}
        http_ok = False
        while True:
            dead = self.exited()
            if dead is not None:
                raise LaunchError(dead.describe_exit())
            for name, addr in list(pending.items()):
                if probes.grpc_health(addr, timeout=0.5) == "SERVING":
                    del pending[name]
            if not pending and not http_ok:
                http_ok = probes.http_health(self.stack.http_url, timeout=0.5)
            if not pending and http_ok:
                return
            if time.monotonic() > deadline:
                waiting = ", ".join(pending) or f"the gateway's HTTP endpoint {self.stack.http_url}/healthz"
                raise LaunchError(f"not healthy after {timeout:.0f}s: {waiting}; see {self.stack.layout.logs_dir}")
            time.sleep(0.2)

    def stop(self, timeout: float) -> None:
        """SIGTERM the gateway, then the others; SIGKILL whatever outlives `timeout` per phase."""
        gateway = [c for c in self.children if c.spec.name == "gateway"]
        others = [c for c in self.children if c.spec.name != "gateway"]
        for phase in (gateway, others):
            running = [c for c in phase if c.process.poll() is None]
            for child in running:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for child in running:
                try:
                    child.process.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.process.kill()
                    child.process.wait()


def check_ports_free(stack: Stack) -> None:
    """Fails fast, naming the port, rather than letting a child die on a bind error.

    SO_REUSEADDR, as the services' own servers bind: a stack stopped a moment ago leaves connections
    in TIME_WAIT on its ports, which block a plain bind but not the servers (a listener still does)."""
    ports = {"HTTP (--port)": stack.ports.http, **{s.name: int(s.addr.rsplit(":", 1)[1]) for s in stack.services}}
    for what, port in ports.items():
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((HOST, port))
            except OSError:
                raise LaunchError(
                    f"port {port} for {what} is in use: is a stack already running (`modelrunner status`)? "
                    "Choose other ports with --port and --grpc-base-port"
                ) from None


def running_state(layout: StackLayout) -> StackState | None:
    """The recorded stack, if its launcher is still alive."""
    state = StackState.read(layout.state_file)
    return state if state is not None and pid_alive(state.pid) else None


def _raise_stop(signum, frame) -> None:
    raise _Stop()


def run_foreground(
    stack: Stack,
    *,
    default_model: bool = True,
    timeout: float = 120.0,
    stop_timeout: float | None = None,
    say: Say = print,
    policy: RestartPolicy | None = None,
) -> int:
    """Runs the stack until Ctrl-C or SIGTERM (0), or until a service crash-loops (1); restarts a service
    that exits. Returns the exit code."""
    layout = stack.layout
    existing = running_state(layout)
    if existing is not None:
        raise LaunchError(f"a stack is already running from {layout.data_dir} (pid {existing.pid}, {existing.url}); "
                          "stop it with `modelrunner down`")
    check_ports_free(stack)
    stop_timeout = stop_timeout if stop_timeout is not None else float(config.SHUTDOWN_GRACE.value()) + 5
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_stop)
    started = time.monotonic()
    state = StackState(os.getpid(), stack.http_url, str(layout.data_dir), "starting", time.time())
    supervisor = Supervisor(stack, policy)
    try:
        supervisor.spawn()
        state.services = supervisor.records()
        state.write(layout.state_file)
        supervisor.wait_healthy(timeout)
        if default_model:
            from modelrunner.default_model import ensure_default_model

            state.state = "importing"
            state.write(layout.state_file)
            try:
                ensure_default_model(state.services["store"]["addr"], say)
            except (OSError, grpc.RpcError) as err:  # FileNotFoundError: the package is not installed
                detail = err.details() if isinstance(err, grpc.Call) else str(err)
                raise LaunchError(f"could not import the default model: {detail}; "
                                  "start with --no-default-model to go without it") from None
        state.state = "ready"
        state.write(layout.state_file)
        say(f"Model Runner is up in {time.monotonic() - started:.1f}s: {stack.http_url} "
            f"(OpenAI API at {stack.http_url}/v1; data in {layout.data_dir})")
        while supervisor.tend(say) is None:
            if (records := supervisor.records()) != state.services:
                state.services = records
                state.write(layout.state_file)
            time.sleep(0.2)
        return 1
    except (KeyboardInterrupt, _Stop):
        say("Stopping Model Runner...")
        return 0
    finally:
        state.state = "stopping"
        with contextlib.suppress(OSError):
            state.write(layout.state_file)
        supervisor.stop(stop_timeout)
        with contextlib.suppress(OSError):
            layout.state_file.unlink()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)


def start_background(argv: list[str], layout: StackLayout, timeout: float, on_state: Say) -> StackState:
    """Starts `modelrunner up -f <argv>` detached and waits until it reports "ready".

    `on_state` sees each state the launcher records ("starting", "importing"). Raises LaunchError
    with the end of the launcher's log when it exits first.
    """
    existing = running_state(layout)
    if existing is not None:
        raise LaunchError(f"a stack is already running (pid {existing.pid}): {existing.url}")
    layout.logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = layout.log_file("launcher")
    with log_path.open("ab") as log:
        offset = log.tell()
        process = subprocess.Popen(
            [sys.executable, "-m", "modelrunner.cli.main", "up", "--foreground", *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    seen = ""
    while True:
        if process.poll() is not None:
            raise LaunchError(f"Model Runner did not start; the end of {log_path}:\n{tail(log_path, offset)}")
        state = StackState.read(layout.state_file)
        if state is not None and state.pid == process.pid:
            if state.state == "ready":
                return state
            if state.state != seen:
                seen = state.state
                on_state(seen)
        if time.monotonic() > deadline:
            process.terminate()
            raise LaunchError(f"the stack was not ready after {timeout:.0f}s; see {log_path}")
        time.sleep(0.2)


def stop_background(layout: StackLayout, timeout: float) -> StackState | None:
    """SIGTERMs a recorded launcher and waits for it; returns the stopped stack, None if none ran.

    A launcher that outlives `timeout` is killed along with the services it recorded.
    """
    state = StackState.read(layout.state_file)
    if state is None:
        return None
    if pid_alive(state.pid):
        os.kill(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(state.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    if pid_alive(state.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.pid, signal.SIGKILL)
    for service in state.services.values():
        if _is_our_service(service["pid"]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(service["pid"], signal.SIGKILL)
    with contextlib.suppress(OSError):
        layout.state_file.unlink()
    return state


def _is_our_service(pid: int) -> bool:
    """A recorded pid may have been reused: only a live `python -m modelrunner.*` is ours."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"-m" in cmdline and any(arg.startswith(b"modelrunner.") for arg in cmdline)
