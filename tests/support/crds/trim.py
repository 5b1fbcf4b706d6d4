"""Writes the part of a CRD's openAPIV3Schema the deploy tests check objects against, so the tests run
offline and the stored file stays small enough to review.

Kept: structure and the constraints a walker can check (types, required, enums, bounds, patterns).
Dropped: descriptions, `status` (never rendered), CEL rules (`x-kubernetes-validations`), list/map
markers. A subtree named with --prune is replaced by `{x-trimmed: true}`: a field the CRD defines whose
schema is not stored, so the walker refuses an object that uses it rather than passing it unchecked.

    git -C MIRROR show TAG:config/crd/bases/inference.networking.k8s.io_inferencepools.yaml \
      | python tests/support/crds/trim.py --version v1 --source URL@COMMIT > tests/support/crds/inferencepool.v1.yaml
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

KEPT = {
    "type", "properties", "required", "items", "enum", "additionalProperties", "format", "default",
    "maxItems", "minItems", "maxLength", "minLength", "maxProperties", "minProperties", "maximum", "minimum",
    "pattern", "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields",
}


def trim(schema: dict[str, Any], prune: set[str], path: str = "") -> dict[str, Any]:
    """`schema` without what KEPT leaves out; `prune` holds dotted paths ('spec.rules.filters', list items
    named by their list's field) whose subtrees are replaced by a marker."""
    if path in prune:
        return {"x-trimmed": True}
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in KEPT:
            continue
        if key == "properties":
            out[key] = {
                name: trim(sub, prune, f"{path}.{name}".lstrip("."))
                for name, sub in value.items()
                if not (path == "" and name == "status")
            }
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = trim(value, prune, path)
        else:
            out[key] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True, help="the CRD version whose schema to keep, e.g. v1")
    parser.add_argument("--source", required=True, help="where the CRD came from (repository, path, commit)")
    parser.add_argument("--prune", action="append", default=[], help="dotted path of a subtree to leave out")
    args = parser.parse_args()
    crd = yaml.safe_load(sys.stdin)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == args.version)
    schema = trim(version["schema"]["openAPIV3Schema"], set(args.prune))
    kind, api_version = crd["spec"]["names"]["kind"], f"{crd['spec']['group']}/{args.version}"
    header = [
        f"# openAPIV3Schema of {kind} {api_version}, trimmed by trim.py (no descriptions, status, CEL rules)",
        f"# from {args.source}",
        *(f"# pruned (defined, schema not stored): {p}" for p in args.prune),
    ]
    document = {"apiVersion": api_version, "kind": kind, "schema": schema}
    sys.stdout.write("\n".join(header) + "\n" + yaml.safe_dump(document, sort_keys=False, width=120))


if __name__ == "__main__":
    main()
