"""`ollama create` over the Store: a new name for a local model (`from`), or a model packaged from GGUF
blobs the client uploaded first (`POST /api/blobs/<digest>`, then `files`). Pure translation; the routes
(gateway/ollama_routes.py) make the calls. What a model here cannot keep (a Go template, a system prompt,
parameters, adapters, quantizing) is a 400 naming the field, never silently dropped."""

from __future__ import annotations

from modelrunner.common.names import is_digest
from modelrunner.gateway.errors import APIError
from modelrunner.gateway.ollama_models import CreateRequest
from modelrunner.v1 import store_pb2

GGUF_SUFFIX = ".gguf"


def check(body: CreateRequest) -> None:
    """Exactly one source, and nothing the Store or the Runner could not keep."""
    unsupported = body.unsupported()
    if unsupported == "modelfile":
        raise APIError(400, "modelfile: send the Modelfile's parts instead (`from`, `files`), as ollama clients "
                            "since 0.5 do", param="modelfile")
    if unsupported:
        raise APIError(400, f"{unsupported}: not supported here: a model keeps its GGUF's own chat template, and "
                            "sampling options are given per request; create with `from` or `files` only",
                       param=unsupported)
    if bool(body.from_) == bool(body.files):
        given = "both were given" if body.from_ else "neither was given"
        raise APIError(400, f"give one of `from` (a local model to name anew) or `files` (uploaded GGUF "
                            f"blobs): {given}", param="from")


def package_files(files: dict[str, str]) -> list[store_pb2.PackageFile]:
    """`files` (file name -> "sha256:<hex>") as the Store's GGUF layers, shards in name order."""
    out = []
    for name, digest in sorted(files.items()):
        param = f"files[{name!r}]"
        if not name.lower().endswith(GGUF_SUFFIX) or "/" in name or "\\" in name:
            raise APIError(400, f"{param}: only GGUF files (a base name ending in .gguf) can be packaged here",
                           param="files")
        if not is_digest(digest):
            raise APIError(400, f"{param}: {digest[:80]!r} is not a digest: give sha256:<64 hex digits>",
                           param="files")
        out.append(store_pb2.PackageFile(digest=digest, name=name))
    return out


def missing_blob(files: dict[str, str]) -> APIError:
    """The Store holds no blob of one of `files`: the client skipped or lost the upload."""
    named = ", ".join(f"{name} ({digest})" for name, digest in sorted(files.items()))
    return APIError(400, f"files: a blob of {named} is not on this server: upload it first with "
                         "POST /api/blobs/<digest>", param="files")


def status_lines(source: str) -> list[dict]:
    """Ollama's create status lines, ending in success."""
    first = "using existing layers" if source == "from" else "parsing GGUF"
    return [{"status": first}, {"status": "writing manifest"}, {"status": "success"}]
