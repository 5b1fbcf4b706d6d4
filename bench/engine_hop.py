"""What a token chunk costs the Runner and its engine process, apart from decoding (issue 15).

One model's engine process (the tiny GGUF, whose decode step is so cheap that relaying dominates)
serves N concurrent streams through the Runner's router (a real Runner gRPC server in this process,
which forwards to the engine). The client runs in this process too. Printed per chunk: CPU time of
this process (Runner + client) and of the engine process (from /proc), and wall time; best of
--repeats runs. CPU time is a figure other load on the machine hardly moves.

    python bench/engine_hop.py [--tokens 1000] [--streams 4] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelrunner.common.server import GrpcService  # noqa: E402
from modelrunner.runner.backends.base import LoadOptions  # noqa: E402
from modelrunner.runner.backends.llamacpp import LlamaCppBackend  # noqa: E402
from modelrunner.runner.engine_client import ProcessLauncher  # noqa: E402
from modelrunner.runner.engine_router import SERVICE, add_runner_to_server  # noqa: E402
from modelrunner.runner.manager import ManagerConfig, ModelManager  # noqa: E402
from modelrunner.runner.model_settings import SettingsStore  # noqa: E402
from modelrunner.v1 import runner_pb2, runner_pb2_grpc  # noqa: E402
from tests.support.runner_doubles import FileResolver  # noqa: E402
from tests.support.tiny_gguf import write_tiny_gguf  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def one_stream(stub: runner_pb2_grpc.RunnerStub, tokens: int) -> int:
    request = runner_pb2.GenerateRequest(
        model="tiny", prompt="hello",
        sampling=runner_pb2.SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True),
    )
    chunks = 0
    async for _ in stub.Generate(request):
        chunks += 1
    return chunks


async def per_chunk(stub: runner_pb2_grpc.RunnerStub, engine_pid: int, tokens: int, streams: int) -> tuple[float, ...]:
    """(wall, CPU here, CPU of the engine) seconds per chunk of N concurrent streams."""
    started, here, engine = time.perf_counter(), time.process_time(), process_cpu(engine_pid)
    chunks = sum(await asyncio.gather(*(one_stream(stub, tokens) for _ in range(streams))))
    return (
        (time.perf_counter() - started) / chunks,
        (time.process_time() - here) / chunks,
        (process_cpu(engine_pid) - engine) / chunks,
    )


async def main(tokens: int, streams: int, repeats: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    context = streams * (tokens + 64)
    gguf = write_tiny_gguf(tmp / "tiny.gguf", context_length=context)
    config = ManagerConfig(defaults=LoadOptions(context_size=context, parallel=streams, threads=1))
    manager = ModelManager(
        LlamaCppBackend(), FileResolver({"tiny": str(gguf)}), SettingsStore(tmp / "state"), config,
        launcher=ProcessLauncher(decode_timeout=0),
    )
    server = GrpcService("127.0.0.1:0", [SERVICE.full_name])
    add_runner_to_server(manager, server.server)
    await server.start()
    entry = await manager.load("tiny")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    stub = runner_pb2_grpc.RunnerStub(channel)
    runs = [await per_chunk(stub, entry.engine.pid, tokens, streams) for _ in range(repeats)]
    wall, here, engine = (min(r[i] for r in runs) for i in range(3))
    print(f"{streams} streams x {tokens} tokens, best of {repeats}: wall {wall * 1e3:.3f} ms/chunk, CPU per chunk:"
          f" Runner + client {here * 1e3:.3f} ms, engine {engine * 1e3:.3f} ms")
    await channel.close()
    await server.stop(0)
    await manager.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.tokens, args.streams, args.repeats))
