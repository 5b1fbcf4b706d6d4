"""Builds the descriptor set Envoy's grpc_json_transcoder serves the REST surface from.

The set is compiled from the same protos/ (and the same include paths) as the Python stubs, with every
import included, so Envoy maps the same `google.api.http` annotations the gateway implements.

One adaptation: Envoy (1.40) refuses to start when a rule sets `response_body` to a field that is not a
`google.api.HttpBody` ("Setting "response_body" is not supported yet for non-HttpBody fields"). Those
rules lose `response_body` here, so on the transcoded surface they answer the whole response message
(`{"models": [...]}` where the gateway answers the bare list). Each one is named on stderr.

Usage: python deploy/envoy/build_descriptors.py OUT.pb
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Iterator

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from gen_protos import PROTOS, include_dirs  # noqa: E402

HTTP_BODY = ".google.api.HttpBody"


def compile_protos(out: pathlib.Path) -> None:
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    args = ["protoc", *(f"-I{d}" for d in include_dirs())]
    args += ["--include_imports", f"--descriptor_set_out={out}", *sources]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed to build {out}")


def _rules(rule: http_pb2.HttpRule) -> Iterator[http_pb2.HttpRule]:
    yield rule
    for extra in rule.additional_bindings:
        yield from _rules(extra)


def drop_unsupported_response_bodies(files: descriptor_pb2.FileDescriptorSet) -> list[str]:
    """Clears `response_body` where Envoy cannot honour it; returns the methods changed."""
    messages = {
        f".{f.package}.{m.name}": m for f in files.file for m in f.message_type
    }
    changed = []
    for file in files.file:
        for service in file.service:
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    continue
                output = messages.get(method.output_type)
                for rule in _rules(method.options.Extensions[annotations_pb2.http]):
                    if not rule.response_body or output is None:
                        continue
                    field = next(f for f in output.field if f.name == rule.response_body)
                    if field.type_name != HTTP_BODY:
                        rule.response_body = ""
                        changed.append(f"{file.package}.{service.name}.{method.name}")
    return changed


def build(out: pathlib.Path) -> pathlib.Path:
    """Writes the descriptor set of every .proto under protos/ to `out`, ready for Envoy."""
    out.parent.mkdir(parents=True, exist_ok=True)
    compile_protos(out)
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    for method in drop_unsupported_response_bodies(files):
        print(f"{method}: response_body dropped (Envoy supports it for HttpBody only)", file=sys.stderr)
    out.write_bytes(files.SerializeToString())
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    print(build(pathlib.Path(sys.argv[1]).resolve()))
