"""Store write throughput: a 1 GiB blob through the Store's gRPC WriteBlob stream vs `cp` on one disk.

Both copy the same file in the same run, into the same filesystem. The Store also hashes (sha256),
verifies, fsyncs and renames, so `cp` + fsync and sha256 of the file alone are shown as well, and so
is the same stream into a
server that only counts the bytes (the gRPC transport's own ceiling on this host), and the Store's
write path without gRPC. Note: GNU cp copies with copy_file_range, inside the kernel. Run: `python bench/store_bench.py
[--size-mib 1024] [--dir DIR]`; prints a table (best of --repeat runs for each row).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from modelrunner.store.models import ModelStore
from modelrunner.store.servicer import register
from modelrunner.v1 import store_pb2, store_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]


def make_file(path: Path, size: int) -> str:
    h = hashlib.sha256()
    block = 8 << 20
    with open(path, "wb") as f:
        left = size
        while left:
            data = os.urandom(min(block, left))
            h.update(data)
            f.write(data)
            left -= len(data)
    return "sha256:" + h.hexdigest()


def time_cp(src: Path, dst: Path, fsync: bool) -> float:
    start = time.perf_counter()
    subprocess.run(["cp", str(src), str(dst)], check=True)
    if fsync:
        fd = os.open(dst, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    elapsed = time.perf_counter() - start
    dst.unlink()
    return elapsed


def time_sha256(src: Path) -> float:
    """sha256 of the file alone (from the page cache): the verification the Store cannot skip, and so
    a floor under any WriteBlob, whatever its transport and disk."""
    start = time.perf_counter()
    h = hashlib.sha256()
    with open(src, "rb", buffering=0) as f:
        while data := f.read(8 << 20):
            h.update(data)
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def write_through_store(addr: str, src: Path, digest: str, size: int, chunk: int) -> float:
    opts = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(addr, options=opts) as channel:
        stub = store_pb2_grpc.StoreStub(channel)
        await channel.channel_ready()

        async def messages():
            yield store_pb2.WriteBlobRequest(header=store_pb2.BlobHeader(digest=digest, size=size))
            with open(src, "rb", buffering=0) as f:  # noqa: ASYNC230 (reading is part of what is timed)
                while data := f.read(chunk):
                    yield store_pb2.WriteBlobRequest(data=data)

        start = time.perf_counter()
        result = await stub.WriteBlob(messages())
        elapsed = time.perf_counter() - start
        assert result.digest == digest and result.size == size and not result.existed
        await stub.PurgeModels(store_pb2.PurgeModelsRequest())
        await stub.Prune(store_pb2.PruneRequest())
    return elapsed


class _Sink(store_pb2_grpc.StoreServicer):
    """WriteBlob that only counts the bytes, parsed as the Store parses them: the transport's ceiling."""

    async def WriteBlob(self, request_iterator, context):
        header, size = None, 0
        async for message in request_iterator:
            if header is None:
                header = message.header
            else:
                size += len(message)
        return store_pb2.WriteBlobResponse(digest=header.digest, size=size)

    async def PurgeModels(self, request, context):
        return store_pb2.PurgeModelsResponse()

    async def Prune(self, request, context):
        return store_pb2.PruneResponse()


async def serve_sink(addr: str) -> None:
    opts = [("grpc.max_receive_message_length", 64 << 20)]
    server = grpc.aio.server(options=opts)
    register(_Sink())(server)
    server.add_insecure_port(addr)
    await server.start()
    await server.wait_for_termination()


def start_sink() -> tuple[subprocess.Popen, str]:
    addr = f"127.0.0.1:{free_port()}"
    return subprocess.Popen([sys.executable, __file__, "--sink", addr], cwd=ROOT), addr


async def write_in_process(models_dir: Path, src: Path, digest: str, size: int, chunk: int) -> float:
    """The Store's own write path (hash, write, fsync, rename) without gRPC, in this process."""
    with ThreadPoolExecutor(8) as pool:
        store = ModelStore(models_dir, pool)
        store.open()

        async def chunks():
            with open(src, "rb", buffering=0) as f:  # noqa: ASYNC230 (reading is part of what is timed)
                while data := f.read(chunk):
                    yield data

        start = time.perf_counter()
        result = await store.blobs.write(digest, size, 0, chunks())
        elapsed = time.perf_counter() - start
        assert not result.existed
        await store.purge()
    return elapsed


def start_store(models_dir: Path) -> tuple[subprocess.Popen, str]:
    addr = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "MODELRUNNER_MODELS_DIR": str(models_dir), "MODELRUNNER_LOG_LEVEL": "warning"}
    proc = subprocess.Popen([sys.executable, "-m", "modelrunner.store", "--listen", addr], env=env, cwd=ROOT)
    return proc, addr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--dir", default=None, help="work directory (default: a temp dir under /tmp)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--sink", help=argparse.SUPPRESS)  # internal: serve the byte-counting server
    args = parser.parse_args()
    if args.sink:
        asyncio.run(serve_sink(args.sink))
        return
    size = args.size_mib << 20
    work = Path(tempfile.mkdtemp(prefix="store-bench-", dir=args.dir))
    procs: list[subprocess.Popen] = []
    try:
        src = work / "blob.bin"
        digest = make_file(src, size)
        proc, addr = start_store(work / "models")
        sink, sink_addr = start_sink()
        procs += [proc, sink]
        rows: list[tuple[str, float]] = []
        rows.append(("cp", min(time_cp(src, work / "copy.bin", False) for _ in range(args.repeat))))
        rows.append(("cp + fsync", min(time_cp(src, work / "copy.bin", True) for _ in range(args.repeat))))
        rows.append(("sha256 of the file alone", min(time_sha256(src) for _ in range(args.repeat))))
        for chunk_mib in (1, 4):
            best = min(
                asyncio.run(write_through_store(addr, src, digest, size, chunk_mib << 20)) for _ in range(args.repeat)
            )
            rows.append((f"Store WriteBlob, {chunk_mib} MiB chunks", best))
        best = min(
            asyncio.run(write_in_process(work / "in-process", src, digest, size, 1 << 20)) for _ in range(args.repeat)
        )
        rows.append(("Store write path, no gRPC, 1 MiB", best))
        best = min(asyncio.run(write_through_store(sink_addr, src, digest, size, 1 << 20)) for _ in range(args.repeat))
        rows.append(("gRPC stream into a byte counter, 1 MiB", best))
        base = rows[0][1]
        print(f"\n{args.size_mib} MiB blob, best of {args.repeat}, on {work}")
        print(f"{'method':<40} {'seconds':>8} {'MB/s':>8} {'vs cp':>6}")
        for name, secs in rows:
            print(f"{name:<40} {secs:8.2f} {size / secs / 1e6:8.0f} {base / secs:6.2f}x")
    finally:
        for p in procs:
            p.terminate()
            p.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
