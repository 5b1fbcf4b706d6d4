"""Packaging by upload through the real gateway and Store processes: `modelrunner package` streams the
files (the Store opens no path a client names), and a packaging request naming a server file is
refused, so a web page can no longer make /etc/shadow a model blob."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.registry import ServiceProcess, gateway, hidden_from

MODELRUNNER = str(Path(sys.executable).parent / "modelrunner")


@dataclass
class Edge:
    url: str
    store: ServiceProcess
    models_dir: Path
    client_dir: Path  # where the client keeps its files: an empty tmpfs for the Store where unshare works
    hidden: bool
    gateway_log: Path


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[Edge]:
    """A Store and the gateway in front of it (the Distribution and Runner are not needed here)."""
    models_dir = tmp_path / "store" / "models"
    (tmp_path / "store").mkdir()
    client_dir = tmp_path / "client-only"
    client_dir.mkdir()
    launcher = hidden_from(client_dir)
    store = ServiceProcess("modelrunner.store", {"MODELRUNNER_MODELS_DIR": str(models_dir)}, tmp_path / "store",
                           launcher).start()
    try:
        with gateway(tmp_path, store.addr) as url:
            yield Edge(url, store, models_dir, client_dir, launcher is not None, tmp_path / "gateway.log")
    finally:
        store.stop()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_modelrunner_package_uploads_the_files_from_a_folder_the_store_never_sees(
    edge: Edge, tiny_gguf: Path
) -> None:
    """Where `unshare -m` works (as root in CI), the Store runs in its own mount namespace with an empty
    tmpfs over the client's folder, as when it runs in a container or on another node."""
    client_dir = edge.client_dir
    gguf = client_dir / "my-model.gguf"
    shutil.copy(tiny_gguf, gguf)
    (client_dir / "LICENSE").write_text("MIT License\n")
    (client_dir / "template.jinja").write_text("{{ messages }}")
    done = subprocess.run(
        [MODELRUNNER, "package", "my-model.gguf", "--license", "LICENSE", "--chat-template", "template.jinja",
         "ai/uploaded:v1"],
        cwd=client_dir, env={**os.environ, "MODELRUNNER_HOST": edge.url}, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Packaged ai/uploaded:v1" in done.stdout
    if edge.hidden:
        store_view = Path(f"/proc/{edge.store.proc.pid}/root") / client_dir.relative_to("/")
        assert not any(store_view.iterdir()), "the Store must not see the client's folder"
    shutil.rmtree(client_dir)  # the model lives in the Store's blobs, not in the client's files

    model = httpx.get(f"{edge.url}/models/ai/uploaded:v1", timeout=10).json()
    assert model["tags"] == ["docker.io/ai/uploaded:v1"] and model["config"]["architecture"] == "llama"
    blobs = edge.models_dir / "blobs" / "sha256"
    for data in (tiny_gguf.read_bytes(), b"MIT License\n", b"{{ messages }}"):
        assert (blobs / sha256(data).removeprefix("sha256:")).read_bytes() == data
    layout_text = "".join(p.read_text(errors="replace") for p in edge.models_dir.rglob("*.json"))
    assert str(client_dir) not in layout_text and str(client_dir) not in edge.store.log.read_text()


def test_package_with_a_server_path_is_refused_and_makes_no_blob(edge: Edge, tiny_gguf: Path) -> None:
    blobs_before = set((edge.models_dir / "blobs" / "sha256").glob("*")) if (edge.models_dir / "blobs").exists() else set()
    attacks = [
        {"json": {"gguf_path": str(tiny_gguf), "license_path": "/etc/shadow", "name": "ai/stolen:v1"}},
        {"content": f'{{"gguf_path": "{tiny_gguf}", "license_path": "/etc/hostname", "name": "ai/stolen:v1"}}',
         "headers": {"Content-Type": "text/plain"}},  # what a web page may send cross-site
    ]
    for attack in attacks:
        reply = httpx.post(f"{edge.url}/models/package", timeout=10, **attack)
        assert reply.status_code in (400, 415), reply.text
    assert httpx.get(f"{edge.url}/models/ai/stolen:v1", timeout=10).status_code == 404
    blobs_after = set((edge.models_dir / "blobs" / "sha256").glob("*")) if (edge.models_dir / "blobs").exists() else set()
    assert blobs_after == blobs_before


def test_an_upload_whose_bytes_do_not_match_its_digest_is_refused(edge: Edge) -> None:
    claimed = sha256(b"something else")
    reply = httpx.put(f"{edge.url}/models/blobs/{claimed}", content=b"GGUF-not-it",
                      headers={"Content-Type": "application/octet-stream"}, timeout=10)
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "digest"
    fine = httpx.put(f"{edge.url}/models/blobs/{sha256(b'GGUF-it')}", content=b"GGUF-it",
                     headers={"Content-Type": "application/octet-stream"}, timeout=10)
    assert fine.status_code == 201 and fine.json()["digest"] == sha256(b"GGUF-it")
    again = httpx.put(f"{edge.url}/models/blobs/{sha256(b'GGUF-it')}", content=b"GGUF-it",
                      headers={"Content-Type": "application/octet-stream"}, timeout=10)
    assert again.status_code == 200 and again.json()["existed"] is True


def test_an_upload_larger_than_the_json_body_limit_streams_to_the_store(edge: Edge, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(24 << 20))  # over the gateway's 16 MiB limit of JSON bodies
    with big.open("rb") as body:
        reply = httpx.put(f"{edge.url}/models/blobs/{sha256(big.read_bytes())}", content=body, timeout=60,
                          headers={"Content-Type": "application/octet-stream"})
    assert reply.status_code == 201, reply.text
    stored = edge.models_dir / "blobs" / "sha256" / sha256(big.read_bytes()).removeprefix("sha256:")
    assert stored.stat().st_size == 24 << 20
