"""Layout paths and atomic writes of the Store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from modelrunner.store.index import (
    CorruptIndex,
    Entry,
    Index,
    parse_index,
    render_index,
)
from modelrunner.store.layout import Layout, check_digest

from modelrunner.common.errors import ServiceError

HEX = "ab" * 32


@pytest.mark.parametrize(
    "bad", ["sha256:../../etc/passwd", f"sha256:{HEX}/x", "/etc/passwd", f"sha512:{HEX}", f"sha256:{HEX.upper()}", ""]
)
def test_only_well_formed_digests_become_paths(tmp_path: Path, bad: str):
    with pytest.raises(ServiceError):
        Layout(tmp_path).blob(bad)


def test_blob_and_partial_paths_stay_in_their_folders(tmp_path: Path):
    layout = Layout(tmp_path)
    assert check_digest(f"sha256:{HEX}") == HEX
    assert layout.blob(f"sha256:{HEX}") == tmp_path / "blobs" / "sha256" / HEX
    assert layout.partial(f"sha256:{HEX}") == tmp_path / "ingest" / HEX


def test_create_writes_an_oci_layout_and_start_up_keeps_partials_only(tmp_path: Path):
    layout = Layout(tmp_path)
    layout.create()
    assert json.loads(layout.oci_layout_path.read_text()) == {"imageLayoutVersion": "1.0.0"}
    (layout.ingest / HEX).write_bytes(b"partial")
    fd, tmp = layout.temp_file()
    os.close(fd)
    assert layout.clean_temp_files() == [tmp]
    assert not tmp.exists() and layout.partials() == [layout.ingest / HEX]


def test_write_atomic_replaces_and_leaves_no_temp_file(tmp_path: Path):
    layout = Layout(tmp_path)
    layout.create()
    target = tmp_path / "index.json"
    layout.write_atomic(target, b"one")
    layout.write_atomic(target, b"two")
    assert target.read_bytes() == b"two" and list(layout.ingest.iterdir()) == []


def test_index_round_trip_keeps_tags_as_ref_names(tmp_path: Path):
    entries = (
        Entry(f"sha256:{HEX}", 10, "application/vnd.oci.image.manifest.v1+json", "docker.io/ai/x:latest"),
        Entry(f"sha256:{HEX}", 10, "application/vnd.oci.image.manifest.v1+json", None),
    )
    data = render_index(entries)
    doc = json.loads(data)
    assert doc["manifests"][0]["annotations"] == {"org.opencontainers.image.ref.name": "docker.io/ai/x:latest"}
    assert "annotations" not in doc["manifests"][1]
    assert parse_index(data) == entries


@pytest.mark.parametrize(
    "bad", [b"{", b'{"manifests": [{"digest": "sha256:../x", "size": 1}]}', b'{"manifests": [{}]}']
)
def test_a_corrupt_index_is_refused_not_overwritten(tmp_path: Path, bad: bytes):
    layout = Layout(tmp_path)
    layout.create()
    layout.index_path.write_bytes(bad)
    with pytest.raises(CorruptIndex):
        Index(layout).load()
    assert layout.index_path.read_bytes() == bad
