"""Regenerates the Python stubs of protos/ next to the .proto sources (the one way to make them).

Usage: python scripts/gen_protos.py [OUT_DIR]   (default: protos/, which is where they are committed)
"""

from __future__ import annotations

import pathlib
import sys

import grpc_tools
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def include_dirs() -> list[str]:
    """protoc's own well-known types and googleapis-common-protos' google/api/*.proto."""
    from google.api import annotations_pb2

    googleapis = pathlib.Path(annotations_pb2.__file__).resolve().parent.parent.parent
    return [str(PROTOS), str(pathlib.Path(grpc_tools.__file__).parent / "_proto"), str(googleapis)]


def generate(out_dir: pathlib.Path) -> None:
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    args = ["protoc", *(f"-I{d}" for d in include_dirs())]
    args += [f"--python_out={out_dir}", f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}", *sources]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else PROTOS)
