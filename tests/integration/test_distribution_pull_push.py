"""Pull and push through real processes: docker-registry <-> Distribution <-> Store (on disk).

skopeo, an independent OCI client, reads what we push; artifacts laid out as Docker Model Runner
pushes them, uploaded with plain HTTP calls, pull and resolve to their files.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from modelrunner.v1 import distribution_pb2, distribution_pb2_grpc, store_pb2, store_pb2_grpc
from tests.support.registry import Registry, Stack, dmr_artifact, package, pull, push, sha256_digest, upload

SKOPEO = "/usr/bin/skopeo"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack.start(tmp_path)
    yield stack
    stack.stop()


async def resolve(stack: Stack, name: str) -> store_pb2.ResolvedModel:
    async with grpc.aio.insecure_channel(stack.store.addr) as channel:
        return await store_pb2_grpc.StoreStub(channel).ResolveModel(store_pb2.ResolveModelRequest(name=name))


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


async def test_pull_dmr_artifact_resolves_to_its_files(registry: Registry, stack: Stack, tiny_gguf: Path) -> None:
    gguf = tiny_gguf.read_bytes()
    manifest, blobs = dmr_artifact(gguf, b"MIT License\n")
    model_id = upload(registry.url, "ai/tiny", "v1", manifest, blobs)
    messages = await pull(stack, f"{registry.host}/ai/tiny:v1")
    assert messages[-1].type == "success" and messages[-1].model_id == model_id
    progress = [m for m in messages if m.type == "progress"]
    assert progress and all(m.mode == "pull" and m.total == sum(len(b) for b in blobs.values()) for m in progress)
    assert {m.layer.id for m in progress} == set(blobs)
    resolved = await resolve(stack, f"{registry.host}/ai/tiny:v1")
    assert resolved.id == model_id
    assert [file_digest(p) for p in resolved.gguf_paths] == [sha256_digest(gguf)]
    assert Path(resolved.license_path).read_bytes() == b"MIT License\n"


async def test_pull_present_model_transfers_no_blob(registry: Registry, stack: Stack, tiny_gguf: Path) -> None:
    manifest, blobs = dmr_artifact(tiny_gguf.read_bytes())
    upload(registry.url, "ai/tiny", "v1", manifest, blobs)
    await pull(stack, f"{registry.host}/ai/tiny:v1")
    log_before = registry.blob_gets()
    messages = await pull(stack, f"{registry.host}/ai/tiny:v1")
    assert messages[-1].type == "success"
    assert registry.blob_gets() == log_before  # no GET /v2/.../blobs/ reached the registry
    assert messages[-1].rate == 0


async def test_pull_by_digest_and_through_an_index(registry: Registry, stack: Stack, tiny_gguf: Path) -> None:
    manifest, blobs = dmr_artifact(tiny_gguf.read_bytes())
    digest = upload(registry.url, "ai/tiny", "v1", manifest, blobs)
    index = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
                       "size": len(manifest), "platform": {"os": "linux", "architecture": "amd64"}}],
    }).encode()
    upload(registry.url, "ai/tiny", "multi", index, {}, media_type="application/vnd.oci.image.index.v1+json")
    assert (await pull(stack, f"{registry.host}/ai/tiny:multi"))[-1].model_id == digest
    assert (await pull(stack, f"{registry.host}/ai/tiny@{digest}"))[-1].model_id == digest


async def test_pull_errors_are_clear(registry: Registry, stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await pull(stack, f"{registry.host}/ai/nothing:v1")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert f"{registry.host}/ai/nothing:v1" in missing.value.details()

    image_config = b'{"architecture":"amd64","os":"linux"}'
    layer = b"not a model"
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256_digest(image_config),
                   "size": len(image_config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256_digest(layer),
                    "size": len(layer)}],
    }).encode()
    upload(registry.url, "library/image", "v1", manifest, {sha256_digest(image_config): image_config,
                                                             sha256_digest(layer): layer})
    with pytest.raises(grpc.aio.AioRpcError) as image:
        await pull(stack, f"{registry.host}/library/image:v1")
    assert image.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "application/vnd.oci.image.config.v1+json" in image.value.details()

    with pytest.raises(grpc.aio.AioRpcError) as down:
        await pull(stack, "127.0.0.1:1/ai/tiny:v1")
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "127.0.0.1:1" in down.value.details()


async def test_get_remote_model(registry: Registry, stack: Stack, tiny_gguf: Path) -> None:
    manifest, blobs = dmr_artifact(tiny_gguf.read_bytes())
    digest = upload(registry.url, "ai/tiny", "v1", manifest, blobs)
    async with grpc.aio.insecure_channel(stack.distribution.addr) as channel:
        model = await distribution_pb2_grpc.DistributionStub(channel).GetRemoteModel(
            distribution_pb2.GetRemoteModelRequest(reference=f"{registry.host}/ai/tiny:v1")
        )
    assert model.id == digest and model.config.architecture == "llama" and model.config.context_size == 512


async def push_round_trip(registry: Registry, tmp_path: Path, gguf: Path) -> None:
    """Package `gguf` in one Store, push it, read it with skopeo, pull it into another Store: same bytes."""
    name = f"{registry.host}/team/model:v1"
    first = Stack.start(tmp_path / "a")
    try:
        model = await package(first, gguf, name)
        messages = await push(first, name)
        assert messages[-1].type == "success" and messages[-1].model_id == model.id
        assert all(m.mode == "push" for m in messages)
        # Pushing again uploads nothing (HEAD finds every blob).
        again = await push(first, name)
        assert again[-1].rate == 0
    finally:
        first.stop()

    inspect = subprocess.run([SKOPEO, "inspect", "--raw", "--tls-verify=false", f"docker://{name}"],
                             check=True, capture_output=True)
    assert sha256_digest(inspect.stdout) == model.id
    copied = tmp_path / "skopeo-dir"
    subprocess.run([SKOPEO, "copy", "--src-tls-verify=false", f"docker://{name}", f"dir:{copied}"],
                   check=True, capture_output=True)
    gguf_digest = file_digest(gguf)
    assert (copied / gguf_digest.removeprefix("sha256:")).stat().st_size == gguf.stat().st_size
    assert file_digest(copied / gguf_digest.removeprefix("sha256:")) == gguf_digest

    second = Stack.start(tmp_path / "b")
    try:
        assert (await pull(second, name))[-1].model_id == model.id
        resolved = await resolve(second, name)
        assert [file_digest(p) for p in resolved.gguf_paths] == [gguf_digest]
    finally:
        second.stop()


async def test_push_then_pull_round_trip(registry: Registry, tmp_path: Path, tiny_gguf: Path) -> None:
    await push_round_trip(registry, tmp_path, tiny_gguf)


@pytest.mark.slow
async def test_push_then_pull_round_trip_gemma(registry: Registry, tmp_path: Path, gemma_gguf: Path) -> None:
    await push_round_trip(registry, tmp_path, gemma_gguf)


async def test_push_mounts_from_another_repository(registry: Registry, stack: Stack, tiny_gguf: Path) -> None:
    first, second = f"{registry.host}/team/model:v1", f"{registry.host}/other/model:v1"
    await package(stack, tiny_gguf, first)
    await push(stack, first)
    async with grpc.aio.insecure_channel(stack.store.addr) as channel:
        await store_pb2_grpc.StoreStub(channel).TagModel(
            store_pb2.TagModelRequest(source=first, repo=f"{registry.host}/other/model", tag="v1")
        )
    uploads_before = registry.blob_uploads()
    messages = await push(stack, second)
    assert messages[-1].type == "success"
    assert registry.blob_uploads() == uploads_before  # every blob was mounted, none uploaded
    inspect = subprocess.run([SKOPEO, "inspect", "--raw", "--tls-verify=false", f"docker://{second}"],
                             check=True, capture_output=True)
    assert json.loads(inspect.stdout)["config"]["mediaType"] == "application/vnd.docker.ai.model.config.v0.1+json"


async def test_https_registry_with_a_custom_ca_bundle(tmp_path: Path, tiny_gguf: Path) -> None:
    """A registry with a self-signed certificate: trusted through MODELRUNNER_CA_BUNDLE, and a clear
    error (not a fall-back to plain HTTP) without it."""
    with Registry(tls=True) as registry:
        name = f"{registry.host}/team/tls:v1"
        trusting = {"MODELRUNNER_CA_BUNDLE": str(registry.certificate)}
        first = Stack.start(tmp_path / "a", trusting)
        try:
            model = await package(first, tiny_gguf, name)
            assert (await push(first, name))[-1].type == "success"
        finally:
            first.stop()
        second = Stack.start(tmp_path / "b", trusting)
        try:
            assert (await pull(second, name))[-1].model_id == model.id
        finally:
            second.stop()
        untrusting = Stack.start(tmp_path / "c")
        try:
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await pull(untrusting, name)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "not trusted" in failed.value.details() and "MODELRUNNER_CA_BUNDLE" in failed.value.details()
        finally:
            untrusting.stop()
