"""Gateway overhead: HTTP+gRPC through the gateway vs a direct gRPC call to the service behind it.

1. GET /v1/models p50/p95 vs Store.ListModels p50/p95 (one keep-alive connection, sequential).
2. Streaming: chat SSE through the gateway vs Runner.Generate directly, same tiny model, greedy,
   ignore_eos so both produce exactly N tokens; overhead per token = (HTTP time - gRPC time) / N.

Starts its own Store, Distribution, Runner and gateway on free ports with a temporary models dir and
the tiny test GGUF. Usage: python bench/gateway_bench.py [--requests 500] [--tokens 256] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modelrunner.store.upload import package_files  # noqa: E402
from modelrunner.v1 import runner_pb2, runner_pb2_grpc, store_pb2, store_pb2_grpc  # noqa: E402
from tests.support.tiny_gguf import write_tiny_gguf  # noqa: E402

SERVICES = ("store", "distribution", "runner", "gateway")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_stack(workdir: Path) -> tuple[dict, str, list[subprocess.Popen]]:
    ports = {name: free_port() for name in SERVICES}
    http = f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "MODELRUNNER_MODELS_DIR": str(workdir / "models"),
        "MODELRUNNER_STORE_ADDR": f"127.0.0.1:{ports['store']}",
        "MODELRUNNER_DISTRIBUTION_ADDR": f"127.0.0.1:{ports['distribution']}",
        "MODELRUNNER_RUNNER_ADDR": f"127.0.0.1:{ports['runner']}",
        "MODELRUNNER_HTTP_LISTEN": http.removeprefix("http://"),
        "MODELRUNNER_LOG_LEVEL": "warning",
    }
    procs = []
    for name in SERVICES:
        log = open(workdir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        procs.append(subprocess.Popen([sys.executable, "-m", f"modelrunner.{name}"],
                                      env={**env, "MODELRUNNER_LISTEN": f"127.0.0.1:{ports[name]}"},
                                      cwd=ROOT, stdout=log, stderr=log))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{http}/healthz", timeout=2).status_code == 200:
                return ports, http, procs
            if procs[2].poll() is not None and httpx.get(f"{http}/v1/models", timeout=2).status_code == 200:
                print(f"the Runner did not start (see {workdir}/runner.log): streaming is not measured")
                return ports, http, procs
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_stack(procs)
    raise SystemExit(f"stack not healthy; logs in {workdir}")


def stop_stack(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1e3, ordered[int(len(ordered) * 0.95)] * 1e3


def timed(fn, n: int) -> list[float]:
    for _ in range(min(50, n)):
        fn()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def bench_list(http: str, store_addr: str, n: int) -> None:
    with httpx.Client(base_url=http) as client, grpc.insecure_channel(store_addr) as channel:
        stub = store_pb2_grpc.StoreStub(channel)
        direct = timed(lambda: stub.ListModels(store_pb2.ListModelsRequest(), timeout=10), n)
        via = timed(lambda: client.get("/v1/models").raise_for_status(), n)
    d50, d95 = percentiles(direct)
    g50, g95 = percentiles(via)
    print(f"GET /v1/models via gateway: p50 {g50:.2f} ms, p95 {g95:.2f} ms")
    print(f"Store.ListModels direct:    p50 {d50:.2f} ms, p95 {d95:.2f} ms")
    print(f"gateway overhead p50: {g50 - d50:.2f} ms per request (target <= 2 ms)")


def bench_stream(http: str, runner_addr: str, tokens: int, rounds: int) -> None:
    messages = [{"role": "user", "content": "hi"}]
    body = {"model": "ai/tiny", "messages": messages, "max_tokens": tokens, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    request = runner_pb2.GenerateRequest(
        model="docker.io/ai/tiny:latest",
        chat=runner_pb2.Chat(messages=[runner_pb2.ChatMessage(role="user", content="hi")]),
        sampling=runner_pb2.SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True),
    )

    def direct(stub) -> tuple[float, int]:
        start = time.perf_counter()
        last = None
        for last in stub.Generate(request, timeout=300):
            pass
        return time.perf_counter() - start, last.usage.completion_tokens

    def via(client) -> tuple[float, int]:
        start = time.perf_counter()
        used = 0
        with client.stream("POST", "/v1/chat/completions", json=body) as reply:
            for line in reply.iter_lines():
                if line.startswith("data: {") and '"usage":{' in line:
                    used = int(line.split('"completion_tokens":')[1].split(",")[0])
        return time.perf_counter() - start, used

    with httpx.Client(base_url=http, timeout=300) as client, grpc.insecure_channel(runner_addr) as channel:
        stub = runner_pb2_grpc.RunnerStub(channel)
        direct(stub), via(client)  # warm: load the model
        d_runs, g_runs = [], []
        for _ in range(rounds):  # interleaved, so drift on a shared host hits both alike
            d_runs.append(direct(stub))
            g_runs.append(via(client))
    d_time = statistics.median(t for t, _ in d_runs)
    g_time = statistics.median(t for t, _ in g_runs)
    n = g_runs[0][1] or tokens
    print(f"stream {n} tokens: gateway SSE {g_time * 1e3:.1f} ms ({n / g_time:.0f} tok/s), "
          f"direct gRPC {d_time * 1e3:.1f} ms ({n / d_time:.0f} tok/s)")
    print(f"gateway overhead: {(g_time - d_time) / n * 1e3:.3f} ms per token (target <= 0.5 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        gguf = write_tiny_gguf(workdir / "tiny.gguf")
        ports, http, procs = start_stack(workdir)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{ports['store']}") as channel:
                package_files(store_pb2_grpc.StoreStub(channel), [gguf], "ai/tiny", timeout=60)
            bench_list(http, f"127.0.0.1:{ports['store']}", args.requests)
            if procs[2].poll() is None:
                bench_stream(http, f"127.0.0.1:{ports['runner']}", args.tokens, args.rounds)
        finally:
            stop_stack(procs)


if __name__ == "__main__":
    main()
