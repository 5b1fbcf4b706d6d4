"""The launcher's process supervision, with small fake services in place of the real four."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import socket
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelrunner import launcher
from modelrunner.common import config
from modelrunner.stack import Ports, ServiceSpec, Stack, StackLayout, StackState

# A service that reports SERVING over grpc.health.v1; the gateway also answers /healthz.
# FAKE_MODE=crash exits at once with a message; FAKE_MODE=stubborn ignores SIGTERM.
FAKE_SERVICE = textwrap.dedent(
    """
    import asyncio, os, signal, sys, threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from modelrunner.common.server import GrpcService

    name, mode = sys.argv[1], os.environ.get("FAKE_MODE_" + sys.argv[1], "")
    if mode == "crash":
        print(f"{name}: cannot open the models directory: permission denied", flush=True)
        sys.exit(3)

    class Healthz(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()
        def log_message(self, *args):
            pass

    async def main():
        svc = GrpcService(os.environ["MODELRUNNER_LISTEN"], [])
        await svc.start()
        if name == "gateway":
            host, port = os.environ["MODELRUNNER_HTTP_LISTEN"].rsplit(":", 1)
            server = ThreadingHTTPServer((host, int(port)), Healthz)
            threading.Thread(target=server.serve_forever, daemon=True).start()
        stop = asyncio.Event()
        if mode == "stubborn":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        else:
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print(f"{name} serving", flush=True)
        await stop.wait()
        await svc.stop(0.5)

    asyncio.run(main())
    """
)


@dataclass(frozen=True)
class FakeSpec(ServiceSpec):
    script: str = ""

    def command(self) -> list[str]:
        return [sys.executable, self.script, self.name]


@dataclass(frozen=True)
class FakeStack(Stack):
    script: str = ""

    @property
    def services(self) -> list[ServiceSpec]:
        return [FakeSpec(s.name, s.addr, self.script) for s in super().services]


@pytest.fixture
def fake_stack(tmp_path: Path) -> FakeStack:
    script = tmp_path / "fake_service.py"
    script.write_text(FAKE_SERVICE)
    return FakeStack(StackLayout(tmp_path / "data"), Ports.from_base(0, 0), script=str(script))


def test_services_start_in_order_with_their_addresses(tmp_path: Path) -> None:
    stack = Stack(StackLayout(tmp_path), Ports.from_base(20000, 21000))
    assert [(s.name, s.addr) for s in stack.services] == [
        ("store", "127.0.0.1:21000"),
        ("distribution", "127.0.0.1:21001"),
        ("runner", "127.0.0.1:21002"),
        ("gateway", "127.0.0.1:21003"),
    ]
    assert stack.services[0].command()[1:] == ["-m", "modelrunner.store"]
    assert stack.http_url == "http://127.0.0.1:20000"


def test_env_points_every_service_at_the_others(tmp_path: Path) -> None:
    stack = Stack(StackLayout(tmp_path), Ports.from_base(20000, 21000))
    runner = stack.services[2]
    env = stack.env(runner, {"PATH": "/bin", config.METRICS_LISTEN.env: "0.0.0.0:9000"})
    assert env[config.LISTEN.env] == "127.0.0.1:21002"
    assert env[config.STORE_ADDR.env] == "127.0.0.1:21000"
    assert env[config.DISTRIBUTION_ADDR.env] == "127.0.0.1:21001"
    assert env[config.RUNNER_ADDR.env] == "127.0.0.1:21002"
    assert env[config.GATEWAY_ADDR.env] == "127.0.0.1:21003"
    assert env[config.HTTP_LISTEN.env] == "127.0.0.1:20000"
    assert env[config.MODELS_DIR.env] == str(tmp_path / "models")
    assert env[config.DATA_DIR.env] == str(tmp_path)
    assert env["PATH"] == "/bin"
    assert config.METRICS_LISTEN.env not in env  # four processes cannot share one metrics port


def test_any_free_ports_are_distinct() -> None:
    ports = Ports.from_base(0, 0)
    values = [ports.http, ports.store, ports.distribution, ports.runner, ports.gateway]
    assert len(set(values)) == 5 and all(values)


def test_data_dir_flag_wins_over_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELRUNNER_DATA_DIR", str(tmp_path / "env"))
    assert StackLayout.resolve(None).data_dir == tmp_path / "env"
    assert StackLayout.resolve(str(tmp_path / "flag")).data_dir == tmp_path / "flag"


def test_state_file_round_trips(tmp_path: Path) -> None:
    state = StackState(123, "http://127.0.0.1:1", str(tmp_path), "ready", 1.0, {"store": {"pid": 5}})
    state.write(tmp_path / "run" / "stack.json")
    assert StackState.read(tmp_path / "run" / "stack.json") == state
    (tmp_path / "bad.json").write_text("{not json")
    assert StackState.read(tmp_path / "bad.json") is None


def test_supervisor_starts_waits_healthy_and_stops(fake_stack: FakeStack) -> None:
    supervisor = launcher.Supervisor(fake_stack)
    supervisor.spawn()
    try:
        supervisor.wait_healthy(timeout=30)
        assert supervisor.exited() is None
        assert "store serving" in fake_stack.layout.log_file("store").read_text()
    finally:
        supervisor.stop(timeout=10)
    assert all(c.process.returncode == 0 for c in supervisor.children)


def test_a_crash_at_start_reports_the_log_tail(fake_stack: FakeStack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_MODE_runner", "crash")
    supervisor = launcher.Supervisor(fake_stack)
    supervisor.spawn()
    try:
        with pytest.raises(launcher.LaunchError) as info:
            supervisor.wait_healthy(timeout=30)
    finally:
        supervisor.stop(timeout=10)
    message = str(info.value)
    assert "runner exited (code 3)" in message
    assert "cannot open the models directory: permission denied" in message


def test_a_service_ignoring_sigterm_is_killed(fake_stack: FakeStack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_MODE_store", "stubborn")
    supervisor = launcher.Supervisor(fake_stack)
    supervisor.spawn()
    try:
        supervisor.wait_healthy(timeout=30)
    finally:
        supervisor.stop(timeout=1)
    codes = {c.spec.name: c.process.returncode for c in supervisor.children}
    assert codes["store"] == -signal.SIGKILL
    assert codes["gateway"] == 0


def test_busy_port_is_named_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        stack = Stack(StackLayout(tmp_path), dataclasses.replace(Ports.from_base(0, 0), http=port))
        with pytest.raises(launcher.LaunchError, match=f"port {port} for HTTP"):
            launcher.check_ports_free(stack)


def test_tail_reads_only_this_run(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("old run\n")
    offset = log.stat().st_size
    with log.open("a") as f:
        f.write("".join(f"line {i}\n" for i in range(30)))
    text = launcher.tail(log, offset, lines=3)
    assert text == "line 27\nline 28\nline 29"


def test_stop_background_without_a_stack(tmp_path: Path) -> None:
    assert launcher.stop_background(StackLayout(tmp_path), timeout=1) is None


def test_stop_background_stops_a_recorded_launcher_and_spares_foreign_pids(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    layout = StackLayout(tmp_path)
    StackState(sleeper.pid, "http://x", str(tmp_path), "ready", 0.0, {"store": {"pid": 1}}).write(layout.state_file)
    try:
        assert launcher.stop_background(layout, timeout=5) is not None
        assert sleeper.wait(5) == -signal.SIGTERM
        assert not layout.state_file.exists()
    finally:
        sleeper.kill()


def test_busy_port_check_ignores_time_wait(tmp_path: Path) -> None:
    """`down` then `up` at once: the old stack's closed connections linger in TIME_WAIT on its ports."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            accepted.close()  # the side closing first keeps the port in TIME_WAIT
            assert client.recv(1) == b""
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # what the probe used to do
    stack = Stack(StackLayout(tmp_path), dataclasses.replace(Ports.from_base(0, 0), http=port))
    launcher.check_ports_free(stack)


def test_exit_status_names_the_signal() -> None:
    assert launcher.exit_status(3) == "code 3"
    assert launcher.exit_status(-signal.SIGKILL) == "signal 9 (SIGKILL)"


def test_restart_policy_backs_off_exponentially() -> None:
    policy = launcher.RestartPolicy(initial_delay=0.5, max_delay=4.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5, 9)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def tend_until(supervisor: launcher.Supervisor, done, said: list[str], timeout: float = 30) -> launcher.Child | None:
    """Runs supervision steps until `done()` or a crash loop; the step's interval only paces the poll."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        looping = supervisor.tend(said.append)
        if looping is not None or done():
            return looping
        time.sleep(0.05)
    raise AssertionError(f"supervision did not get there in {timeout}s: {said}")


def test_a_killed_service_is_restarted_and_recorded(fake_stack: FakeStack) -> None:
    supervisor = launcher.Supervisor(fake_stack, launcher.RestartPolicy(initial_delay=0.05))
    supervisor.spawn()
    said: list[str] = []
    try:
        supervisor.wait_healthy(timeout=30)
        store = supervisor.children[0]
        old_pid = store.process.pid
        store.process.kill()
        assert tend_until(supervisor, lambda: store.restarts == 1, said) is None
        supervisor.wait_healthy(timeout=30)
        record = supervisor.records()["store"]
        assert record["pid"] != old_pid and record["restarts"] == 1 and record["state"] == "running"
        assert record["last_exit"].startswith("signal 9 (SIGKILL)")
        assert any("store exited (signal 9 (SIGKILL))" in line for line in said)
        assert all(supervisor.records()[name]["restarts"] == 0 for name in ("distribution", "runner", "gateway"))
    finally:
        supervisor.stop(timeout=10)


def test_a_crash_loop_gives_up_saying_so(fake_stack: FakeStack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_MODE_runner", "crash")
    policy = launcher.RestartPolicy(initial_delay=0.01, max_delay=0.02, max_restarts=2, window=60)
    supervisor = launcher.Supervisor(fake_stack, policy)
    supervisor.spawn()
    said: list[str] = []
    try:
        looping = tend_until(supervisor, lambda: False, said)
    finally:
        supervisor.stop(timeout=10)
    assert looping is not None and looping.spec.name == "runner" and looping.restarts == 2
    assert "runner exited 3 times in 60s: giving up (crash loop)" in said[-1]
    assert "cannot open the models directory" in said[-1]
