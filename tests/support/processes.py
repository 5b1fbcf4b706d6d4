"""Services as real processes for the integration tests: start one, wait for its health, look inside
it and its children (the Runner's engine processes) through /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import grpc


def start(module: str, env: dict[str, str], **popen) -> subprocess.Popen:
    """The service's log goes to an unnamed file, never a pipe: a pipe nobody reads fills (64 KiB) and
    then blocks the service, and its engine processes, at their next log line."""
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-m", module], env=env, stdout=subprocess.DEVNULL, stderr=log, **popen)
    proc.log = log
    return proc


def stop(procs: list[subprocess.Popen], timeout: float = 20) -> None:
    """Terminates every process, then waits for each; one that does not exit in `timeout` is killed."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def log_tail(proc: subprocess.Popen, size: int = 2000) -> str:
    """The end of what a process `start`ed wrote to its log."""
    proc.log.seek(0)
    return proc.log.read().decode(errors="replace")[-size:]


def wait_healthy(addr: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args} exited: {log_tail(proc)}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                time.sleep(0.2)
    raise TimeoutError(f"{addr} not healthy after {timeout}s")


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (zombies excluded: they are gone but not yet reaped)."""
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(c) for c in f.read().split()]
    return [c for c in out if alive(c)]


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not: it has exited, only its parent has not reaped it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def open_paths(pid: int) -> set[str]:
    """Files a process and its children have open or mapped (llama.cpp mmaps the weights)."""
    paths: set[str] = set()
    for p in [pid, *children(pid)]:
        try:
            paths |= {os.readlink(f"/proc/{p}/fd/{fd}") for fd in os.listdir(f"/proc/{p}/fd") if fd.isdigit()}
            with open(f"/proc/{p}/maps") as maps:
                paths |= {line.split(None, 5)[5].strip() for line in maps if len(line.split(None, 5)) == 6}
        except OSError:  # it exited meanwhile
            continue
    return paths
