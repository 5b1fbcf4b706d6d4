"""Manifests parsed and validated, configs built in Docker Model Runner's format, shards found."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from modelrunner.common import media_types
from modelrunner.common.artifact_config import parse_created
from modelrunner.common.errors import ServiceError
from modelrunner.common.gguf_info import read_gguf_info
from modelrunner.common.oci import Blob, parse_manifest, render_manifest
from modelrunner.store.artifact import build_config, shard_paths

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def test_manifest_round_trip():
    raw = render_manifest(Blob(media_types.MODEL_CONFIG, D1, 10), [Blob(media_types.GGUF, D2, 20, {"k": "v"})])
    manifest = parse_manifest(raw)
    assert manifest.media_type == media_types.OCI_MANIFEST and manifest.size == 20
    assert [b.digest for b in manifest.blobs] == [D1, D2] and manifest.layers[0].annotations == {"k": "v"}


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ({"schemaVersion": 1}, "schemaVersion"),
        ({"schemaVersion": 2, "mediaType": "text/plain", "layers": []}, "media type"),
        (
            {"schemaVersion": 2, "config": {"digest": "sha256:../../x", "size": 1, "mediaType": "m"}, "layers": []},
            "digest",
        ),
        ({"schemaVersion": 2, "config": {"digest": D1, "size": -1, "mediaType": "m"}, "layers": []}, "size"),
        ({"schemaVersion": 2, "config": {"digest": D1, "size": 1, "mediaType": "m"}}, "layers"),
    ],
)
def test_invalid_manifests_say_what_is_wrong(doc: dict, says: str):
    with pytest.raises(ServiceError) as exc:
        parse_manifest(json.dumps(doc).encode())
    assert says in exc.value.message


def test_config_has_docker_model_runner_fields(tiny_gguf: Path):
    info = read_gguf_info(tiny_gguf)
    layer = Blob(media_types.GGUF, D1, tiny_gguf.stat().st_size)
    created = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    doc = json.loads(build_config(info, [layer], 0, created))
    assert doc["config"]["format"] == "gguf" and doc["config"]["architecture"] == "llama"
    assert doc["config"]["context_size"] == info.context_length and doc["config"]["size"].endswith("kB")
    assert doc["rootfs"] == {"type": "rootfs", "diff_ids": [D1]}
    assert parse_created(doc) == int(created.timestamp())
    assert json.loads(build_config(info, [layer], 128, created))["config"]["context_size"] == 128


def test_shards_are_found_in_order_from_the_first(tmp_path: Path):
    names = [f"m-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
    for n in names:
        (tmp_path / n).write_bytes(b"GGUF")
    assert [p.name for p in shard_paths(tmp_path / names[0])] == names
    with pytest.raises(ServiceError):
        shard_paths(tmp_path / names[1])
    (tmp_path / names[2]).unlink()
    with pytest.raises(ServiceError) as exc:
        shard_paths(tmp_path / names[0])
    assert names[2] in exc.value.message
    assert shard_paths(tmp_path / "single.gguf") == [tmp_path / "single.gguf"]
