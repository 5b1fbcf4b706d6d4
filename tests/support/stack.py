"""The four processes of the stack (Store, Distribution, Runner, gateway) on free 127.0.0.1 ports, for
the tests of every REST surface; `serving` runs one for a module with a model packaged."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.support.packaging import package

ROOT = Path(__file__).resolve().parents[2]


class Stack:
    """The four processes on free 127.0.0.1 ports; each writes its log and spans under `workdir`."""

    SERVICES = ("store", "distribution", "runner", "gateway")

    def __init__(self, workdir: Path, env_extra: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.ports = {name: free_port() for name in self.SERVICES}
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {
            **os.environ,
            "MODELRUNNER_MODELS_DIR": str(workdir / "models"),
            "MODELRUNNER_DATA_DIR": str(workdir / "data"),  # the Runner's settings too: never the user's
            "MODELRUNNER_STORE_ADDR": f"127.0.0.1:{self.ports['store']}",
            "MODELRUNNER_DISTRIBUTION_ADDR": f"127.0.0.1:{self.ports['distribution']}",
            "MODELRUNNER_RUNNER_ADDR": f"127.0.0.1:{self.ports['runner']}",
            "MODELRUNNER_HTTP_LISTEN": f"127.0.0.1:{self.http_port}",
            "MODELRUNNER_LOG_FORMAT": "text",
            "MODELRUNNER_SHUTDOWN_GRACE": "5",
            **(env_extra or {}),
        }

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def trace_file(self, name: str) -> Path:
        return self.workdir / f"{name}.spans.jsonl"

    def start(self, names=SERVICES) -> Stack:
        for name in names:
            env = {**self.env, "MODELRUNNER_LISTEN": f"127.0.0.1:{self.ports[name]}",
                   "MODELRUNNER_TRACE_FILE": str(self.trace_file(name))}
            with open(self.log(name), "ab") as log:
                self.procs[name] = subprocess.Popen(
                    [sys.executable, "-m", f"modelrunner.{name}"], env=env, cwd=ROOT, stderr=log, stdout=log
                )
        return self

    def wait_healthy(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}: {self.log(name).read_text()[-3000:]}")
            try:
                reply = httpx.get(f"{self.url}/healthz", timeout=2)
                if reply.status_code == 200:
                    return
                last = reply.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise TimeoutError(f"stack not healthy in {timeout} s: {last}")

    def stop(self) -> dict[str, int]:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        return codes


@contextlib.contextmanager
def serving(workdir: Path, models: dict[str, Path], env: dict[str, str] | None = None) -> Iterator[Stack]:
    """A healthy stack with `models` (name -> GGUF) packaged; on the way out, the gateway must have
    stopped cleanly."""
    running = Stack(workdir, env).start()
    try:
        running.wait_healthy()
        for name, gguf in models.items():
            package(f"127.0.0.1:{running.ports['store']}", gguf, name)
        yield running
    finally:
        codes = running.stop()
    assert codes["gateway"] == 0, running.log("gateway").read_text()[-3000:]
