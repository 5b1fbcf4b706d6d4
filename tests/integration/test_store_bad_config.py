"""A model config that is JSON of the wrong shape, against the real Store process: PutManifest refuses it
and commits nothing; a store that committed one before the check lists every model and deletes that one."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from modelrunner.store.index import Entry, parse_index, render_index
from modelrunner.store.layout import Layout
from modelrunner.v1 import store_pb2, store_pb2_grpc

from modelrunner.common import media_types
from tests.integration.test_store_service import StoreProcess, digest_of, manifest_for, put_model, write_blob

BAD_CONFIGS = {
    "config": ({"config": "x", "descriptor": {"created": "2025-01-01T00:00:00Z"}}, "config must be an object"),
    "gguf": ({"config": {"format": "gguf", "gguf": [1, 2]}}, "config.gguf must be an object"),
    "descriptor": ({"config": {"format": "gguf"}, "descriptor": "yesterday"}, "descriptor must be an object"),
    "created": ({"descriptor": {"created": 1735689600}}, "descriptor.created must be a string"),
    "context": ({"config": {"format": "gguf", "context_size": "big"}}, "config.context_size must be a whole number"),
    "array": ([1, 2], "it must be a JSON object, not an array"),
}
DEEP = b"[" * 100_000 + b"]" * 100_000  # JSON that Python's parser gives up on (RecursionError)


def weights(name: str) -> bytes:
    return f"{name} weights".encode()


async def refused(stub, name: str, config: bytes) -> str:
    """PutManifest of ai/<name> with `config`: INVALID_ARGUMENT, and no manifest blob written; its details."""
    for blob in (config, weights(name)):
        await write_blob(stub, blob)
    manifest = manifest_for(config, [weights(name)])
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.PutManifest(store_pb2.PutManifestRequest(manifest=manifest, tags=[f"ai/{name}"]))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
    assert not (await stub.StatBlob(store_pb2.StatBlobRequest(digest=digest_of(manifest)))).exists
    return exc.value.details()


async def test_a_config_of_the_wrong_shape_is_refused_and_nothing_is_committed(tmp_path: Path):
    store = StoreProcess(tmp_path / "models").start()
    try:
        async with store.channel() as ch:
            stub = store_pb2_grpc.StoreStub(ch)
            good = await put_model(stub, ["ai/good"], [weights("good")])
            for name, (doc, says) in BAD_CONFIGS.items():
                assert f"the model's config: {says}" in await refused(stub, name, json.dumps(doc).encode())
            assert "is not JSON" in await refused(stub, "notjson", b'{"config": ')
            assert "is not JSON" in await refused(stub, "deep", DEEP)
            assert [m.id for m in (await stub.ListModels(store_pb2.ListModelsRequest())).models] == [good.id]
    finally:
        store.stop()
    assert [e.digest for e in parse_index(Layout(store.models_dir).index_path.read_bytes())] == [good.id]


def commit_unchecked(models_dir: Path, name: str, config: bytes) -> str:
    """Commits ai/<name> as the Store did before it checked configs: its blobs, then its tag in index.json
    (the Store is stopped, so nothing else writes the layout)."""
    layout = Layout(models_dir)
    layer = weights(name)
    manifest = manifest_for(config, [layer])
    for blob in (config, layer, manifest):
        layout.write_atomic(layout.blob(digest_of(blob)), blob)
    entries = parse_index(layout.index_path.read_bytes())
    digest = digest_of(manifest)
    entry = Entry(digest, len(manifest), media_types.OCI_MANIFEST, f"docker.io/ai/{name}:latest")
    layout.write_atomic(layout.index_path, render_index([*entries, entry]))
    return digest


async def test_a_store_holding_models_committed_before_the_check_lists_and_deletes_them(tmp_path: Path):
    store = StoreProcess(tmp_path / "models").start()
    try:
        async with store.channel() as ch:
            good = await put_model(store_pb2_grpc.StoreStub(ch), ["ai/good"], [weights("good")])
    finally:
        store.stop()
    bad = {name: commit_unchecked(store.models_dir, name, json.dumps(doc).encode()) for name, (doc, _) in
           BAD_CONFIGS.items()}
    surrogate = b'{"config": {"format": "\\ud800", "architecture": "llama"}}'
    bad["surrogate"] = commit_unchecked(store.models_dir, "surrogate", surrogate)
    bad["deep"] = commit_unchecked(store.models_dir, "deep", DEEP)

    store.start()
    try:
        async with store.reconnected() as ch:
            stub = store_pb2_grpc.StoreStub(ch)
            listed = {m.id: m for m in (await stub.ListModels(store_pb2.ListModelsRequest())).models}
            assert set(listed) == {good.id, *bad.values()}
            assert listed[good.id].config.architecture == "llama"
            assert listed[bad["config"]].created == 1735689600 and listed[bad["config"]].config.format == ""
            assert listed[bad["gguf"]].config.format == "gguf" and dict(listed[bad["gguf"]].config.gguf) == {}
            surrogate_config = listed[bad["surrogate"]].config
            assert (surrogate_config.format, surrogate_config.architecture) == ("", "llama")
            assert (await stub.GetModel(store_pb2.GetModelRequest(name="ai/descriptor"))).created == 0

            for name, digest in bad.items():
                deleted = await stub.DeleteModel(store_pb2.DeleteModelRequest(name=f"ai/{name}"))
                assert [a.deleted for a in deleted.actions if a.deleted] == [digest]
            assert [m.id for m in (await stub.ListModels(store_pb2.ListModelsRequest())).models] == [good.id]
            for name in bad:
                assert not (await stub.StatBlob(store_pb2.StatBlobRequest(digest=digest_of(weights(name))))).exists
    finally:
        store.stop()
