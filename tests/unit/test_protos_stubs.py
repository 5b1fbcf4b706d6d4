"""The committed stubs are exactly what scripts/gen_protos.py makes from protos/ (fails when stale)."""

from __future__ import annotations

import filecmp
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_committed_stubs_match_generated(tmp_path: pathlib.Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    gen.generate(tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*"))
    assert generated, "protoc generated nothing"
    stale = [str(p) for p in generated if not filecmp.cmp(tmp_path / p, ROOT / "protos" / p, shallow=False)]
    assert not stale, f"stale stubs, run `python scripts/gen_protos.py`: {stale}"
