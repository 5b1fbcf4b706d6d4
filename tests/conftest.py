"""Fixtures every test folder shares: a tiny GGUF model, the real Gemma 3 270M, free ports."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support.models import gemma_gguf_path
from tests.support.tiny_gguf import write_tiny_gguf


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 0.5 MB random-weight llama model with a chat template."""
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="session")
def gemma_gguf() -> Path:
    """The real 253 MB Gemma 3 270M Q4_K_M GGUF (for tests marked slow)."""
    return gemma_gguf_path()
