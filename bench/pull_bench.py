"""Pull throughput: our Distribution + Store vs `skopeo copy docker://... dir:...`, same artifact, same run.

A model with one 1 GiB weights layer is uploaded to a local docker-registry; then skopeo copies it to
a directory and our stack pulls it into a fresh Store (both from the same registry over loopback).
Target: ours >= 0.9x skopeo's throughput.

    .venv/bin/python -m bench.pull_bench [--size-mib 1024] [--runs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import grpc
import httpx

from modelrunner.v1 import distribution_pb2, distribution_pb2_grpc
from tests.support.registry import Registry, Stack, dmr_manifest

MIB = 1 << 20


def write_weights(path: Path, size: int) -> str:
    """Random bytes (incompressible) written and hashed in one pass; returns the digest."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(size // (64 * MIB)):
            block = os.urandom(64 * MIB)
            h.update(block)
            f.write(block)
    return "sha256:" + h.hexdigest()


def upload_file(registry: Registry, repository: str, digest: str, path: Path) -> None:
    with httpx.Client(base_url=registry.url, timeout=600) as http:
        location = http.post(f"/v2/{repository}/blobs/uploads/").headers["Location"]
        with open(path, "rb") as f:
            http.put(f"{location}&digest={digest}", content=f,
                     headers={"Content-Length": str(path.stat().st_size)}).raise_for_status()


def publish(registry: Registry, workdir: Path, size: int) -> str:
    weights = workdir / "weights.bin"
    digest = write_weights(weights, size)
    manifest, blobs = dmr_manifest(digest, size, b"Apache-2.0\n")
    upload_file(registry, "bench/model", digest, weights)
    with httpx.Client(base_url=registry.url, timeout=60) as http:
        for blob_digest, data in blobs.items():
            location = http.post("/v2/bench/model/blobs/uploads/").headers["Location"]
            http.put(f"{location}&digest={blob_digest}", content=data).raise_for_status()
        http.put("/v2/bench/model/manifests/v1", content=manifest,
                 headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}).raise_for_status()
    weights.unlink()
    return digest


def skopeo_copy(registry: Registry, target: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{registry.host}/bench/model:v1",
                    f"dir:{target}"], check=True, capture_output=True)
    return time.perf_counter() - start


async def our_pull(registry: Registry, workdir: Path) -> float:
    stack = Stack.start(workdir)
    try:
        async with grpc.aio.insecure_channel(stack.distribution.addr) as channel:
            stub = distribution_pb2_grpc.DistributionStub(channel)
            start = time.perf_counter()
            last = None
            async for last in stub.PullModel(distribution_pb2.PullModelRequest(reference=f"{registry.host}/bench/model:v1")):
                pass
            elapsed = time.perf_counter() - start
        assert last is not None and last.type == "success"
        return elapsed
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    size = args.size_mib * MIB
    root = Path(tempfile.mkdtemp(prefix="pull-bench-"))
    try:
        with Registry() as registry:
            publish(registry, root, size)
            for run in range(args.runs):
                skopeo_s = skopeo_copy(registry, root / f"skopeo-{run}")
                shutil.rmtree(root / f"skopeo-{run}")
                ours_s = asyncio.run(our_pull(registry, root / f"ours-{run}"))
                shutil.rmtree(root / f"ours-{run}")
                print(f"run {run}: {args.size_mib} MiB  skopeo {skopeo_s:.2f} s ({args.size_mib / skopeo_s:.0f} MiB/s)  "
                      f"ours {ours_s:.2f} s ({args.size_mib / ours_s:.0f} MiB/s)  ratio {skopeo_s / ours_s:.2f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
