"""What the Runner -> engine process hop costs per token chunk (issue 15).

One model's engine process (the tiny GGUF, one slot) serves the same stream twice over: straight from
its Unix socket, and through the Runner's router (a real Runner gRPC server in this process, which
forwards the raw bytes). The client runs in this process too, so the difference in this process's CPU
time per chunk is what relaying costs the Runner, a figure that other load on the machine hardly
moves (wall time per chunk is shown as well). Best of --repeats runs.

    python bench/engine_hop.py [--tokens 2000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
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


async def per_chunk(channel: grpc.aio.Channel, tokens: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) per chunk of one stream."""
    stub = runner_pb2_grpc.RunnerStub(channel)
    request = runner_pb2.GenerateRequest(
        model="tiny", prompt="hello",
        sampling=runner_pb2.SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True),
    )
    started, cpu = time.perf_counter(), time.process_time()
    chunks = 0
    async for _ in stub.Generate(request):
        chunks += 1
    return (time.perf_counter() - started) / chunks, (time.process_time() - cpu) / chunks


async def main(tokens: int, repeats: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    gguf = write_tiny_gguf(tmp / "tiny.gguf", context_length=tokens + 64)
    config = ManagerConfig(defaults=LoadOptions(context_size=tokens + 64, parallel=1, threads=1))
    manager = ModelManager(
        LlamaCppBackend(), FileResolver({"tiny": str(gguf)}), SettingsStore(tmp / "state"), config,
        launcher=ProcessLauncher(decode_timeout=0),
    )
    server = GrpcService("127.0.0.1:0", [SERVICE.full_name])
    add_runner_to_server(manager, server.server)
    await server.start()
    entry = await manager.load("tiny")
    channels = {
        "engine socket": grpc.aio.insecure_channel(f"unix:{entry.engine.socket}"),
        "through the Runner": grpc.aio.insecure_channel(f"127.0.0.1:{server.port}"),
    }
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in channels}
    for _ in range(repeats):  # interleaved, so that load from elsewhere hits both alike
        for name, channel in channels.items():
            runs[name].append(await per_chunk(channel, tokens))
    best = {name: (min(w for w, _ in r), min(c for _, c in r)) for name, r in runs.items()}
    for name, (wall, cpu) in best.items():
        print(f"{name:20s} wall {wall * 1e3:.3f} ms/chunk ({1 / wall:5.0f} chunks/s), CPU here {cpu * 1e3:.3f} ms/chunk")
    (direct_wall, direct_cpu), (hop_wall, hop_cpu) = best["engine socket"], best["through the Runner"]
    print(f"the hop: {(hop_cpu - direct_cpu) * 1e3:.3f} ms CPU per chunk, {(hop_wall - direct_wall) * 1e3:.3f} ms wall")
    for ch in channels.values():
        await ch.close()
    await server.stop(0)
    await manager.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.tokens, args.repeats))
