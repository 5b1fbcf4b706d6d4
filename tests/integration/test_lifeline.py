"""A service the launcher started dies with the launcher, asked for by the service itself after exec
(modelrunner/common/lifeline.py), never by a preexec_fn in the launcher's forked child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from modelrunner import probes
from modelrunner.common.lifeline import PARENT_PID_ENV
from tests.conftest import free_port
from tests.support.processes import alive

# A stand-in for the launcher: starts the Store with its own pid in the environment, prints the
# Store's pid, then waits to be killed.
_PARENT = textwrap.dedent(
    f"""
    import os, subprocess, sys, time
    env = {{**os.environ, {PARENT_PID_ENV!r}: str(os.getpid())}}
    child = subprocess.Popen([sys.executable, "-m", "modelrunner.store"], env=env, stdout=subprocess.DEVNULL)
    print(child.pid, flush=True)
    time.sleep(600)
    """
)


def _until(condition, timeout: float = 60) -> bool:
    """Whether `condition()` came true within `timeout` (polled: the Store is not our child)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def _gone(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}") or not alive(pid)


def test_a_service_ends_when_the_process_that_started_it_is_killed(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "MODELRUNNER_LISTEN": addr, "MODELRUNNER_DATA_DIR": str(tmp_path), "MODELRUNNER_MODELS_DIR": str(tmp_path / "models")}
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], env=env, stdout=subprocess.PIPE, text=True)
    store_pid = int(parent.stdout.readline())
    try:
        assert _until(lambda: probes.grpc_health(addr, timeout=1) == "SERVING"), "the Store never served"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _until(lambda: _gone(store_pid)), "the Store outlived the process that started it"
    finally:
        parent.kill()
        if alive(store_pid):
            os.kill(store_pid, signal.SIGKILL)


def test_a_service_whose_starter_is_already_gone_exits_at_once(tmp_path):
    env = {**os.environ, PARENT_PID_ENV: "1", "MODELRUNNER_DATA_DIR": str(tmp_path), "MODELRUNNER_MODELS_DIR": str(tmp_path / "models")}
    done = subprocess.run(
        [sys.executable, "-m", "modelrunner.store", "--listen", f"127.0.0.1:{free_port()}"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode != 0
    assert "the process that started this service has exited" in done.stderr
