"""The engine seam: nothing outside services/runner/backends/ imports llama_cpp, so another engine
plugs in behind the backend interface without touching the scheduler or the servicer."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IMPORT = re.compile(r"^\s*(import|from)\s+llama_cpp\b", re.MULTILINE)


def test_only_the_backends_import_llama_cpp():
    sources = [p for folder in ("services", "gateway", "modelrunner") for p in (ROOT / folder).rglob("*.py")]
    backends = ROOT / "services" / "runner" / "backends"
    offenders = [str(p.relative_to(ROOT)) for p in sources if backends not in p.parents and IMPORT.search(p.read_text())]
    assert offenders == []
