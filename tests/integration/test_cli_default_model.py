"""The launcher's first-start import of the default model, against a real Store process.

The installed SmolLM2 GGUF is swapped for the tiny GGUF (the slow e2e test imports the real one); what
is tested here is the import itself: uploaded and packaged under its name with its license, tagged
`ai/smollm2`, done once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from modelrunner import default_model
from modelrunner.v1 import store_pb2, store_pb2_grpc
from tests.support.registry import ServiceProcess


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ServiceProcess]:
    process = ServiceProcess("modelrunner.store", {"MODELRUNNER_MODELS_DIR": str(tmp_path / "models")}, tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_the_installed_package_holds_the_gguf_and_its_license() -> None:
    gguf, license_file = default_model.default_files()
    assert gguf.read_bytes()[:4] == b"GGUF"
    assert license_file is not None and "Apache License" in license_file.read_text()


def test_imports_once_with_both_tags(store: ServiceProcess, tmp_path: Path, tiny_gguf: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    license_file = tmp_path / "LICENSE"
    license_file.write_text("Apache License 2.0\n")
    found: list[int] = []

    def files() -> tuple[Path, Path]:
        found.append(1)
        return tiny_gguf, license_file

    monkeypatch.setattr(default_model, "default_files", files)
    said: list[str] = []
    assert default_model.ensure_default_model(store.addr, said.append) is True
    assert "ai/smollm2:135M-Q4_1" in said[0]

    with grpc.insecure_channel(store.addr) as channel:
        stub = store_pb2_grpc.StoreStub(channel)
        models = stub.ListModels(store_pb2.ListModelsRequest(), timeout=10).models
        resolved = stub.ResolveModel(store_pb2.ResolveModelRequest(name="ai/smollm2"), timeout=10)
    assert len(models) == 1
    assert set(models[0].tags) == {"docker.io/ai/smollm2:135M-Q4_1", "docker.io/ai/smollm2:latest"}
    assert Path(resolved.license_path).read_text() == "Apache License 2.0\n"

    assert default_model.ensure_default_model(store.addr, said.append) is False
    assert len(found) == 1
