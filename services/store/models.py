"""The model store: names resolved to manifests, tags moved, models deleted and their blobs collected.

Every index mutation runs under the index lock and checks the blobs it relies on inside it, so a
garbage collection never removes a blob a manifest being committed references. A model whose last
tag goes is removed, with the blobs no remaining model references (blobs a writer has just written
for a manifest not yet committed are leased and kept).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
from modelrunner.common.artifact_config import config_problem
from modelrunner.common.oci import Manifest, parse_manifest
from modelrunner.store.blobs import BlobStore
from modelrunner.store.index import Entry, Index
from modelrunner.store.layout import Layout

from modelrunner.common import media_types
from modelrunner.common.errors import ServiceError, invalid, not_found
from modelrunner.common.names import DIGEST_RE, Reference, parse_reference

log = logging.getLogger(__name__)

_ID_PREFIX_RE = re.compile(r"^(?:sha256:)?([a-f0-9]{1,64})$")
_MIN_BARE_PREFIX = 6  # a bare hex name shorter than this is only ever a model name


@dataclass(frozen=True)
class ModelInfo:
    id: str
    tags: list[str]
    manifest: Manifest | None  # None when the manifest blob is missing (a broken model)
    config: dict


@dataclass(frozen=True)
class DeleteAction:
    untagged: str = ""
    deleted: str = ""


def how_to_get(ref: Reference | str) -> str:
    name = ref.familiar if isinstance(ref, Reference) else ref
    return f"model {name} is not in the store: pull it with `modelrunner pull {name}`"


class ModelStore:
    def __init__(self, root: Path, executor: ThreadPoolExecutor) -> None:
        self.layout = Layout(root)
        self.blobs = BlobStore(self.layout, executor)
        self.index = Index(self.layout)
        self._manifests: dict[str, Manifest] = {}
        self._configs: dict[str, dict] = {}

    def open(self) -> list[str]:
        """Prepares the layout after a start or a crash; returns the digests of missing blobs."""
        self.layout.create()
        for tmp in self.layout.clean_temp_files():
            log.info("removed temporary file of an interrupted write", extra={"fields": {"path": str(tmp)}})
        self.index.load()
        missing = []
        for digest, tags in self.index.models().items():
            for blob in self._model_blob_digests(digest):
                if not self.blobs.exists(blob):
                    missing.append(blob)
                    log.warning(
                        "model is broken: a blob is missing",
                        extra={"fields": {"model": digest, "tags": tags, "blob": blob}},
                    )
        return missing

    def _model_blob_digests(self, digest: str) -> list[str]:
        manifest = self.manifest(digest)
        return [digest] if manifest is None else [digest, *(b.digest for b in manifest.blobs)]

    # Content, cached: blobs are immutable.
    def manifest(self, digest: str) -> Manifest | None:
        if digest not in self._manifests:
            try:
                self._manifests[digest] = parse_manifest(self.layout.blob(digest).read_bytes())
            except (FileNotFoundError, ServiceError):
                return None
        return self._manifests[digest]

    def config(self, manifest: Manifest | None) -> dict:
        if manifest is None:
            return {}
        digest = manifest.config.digest
        if digest not in self._configs:
            try:
                doc = json.loads(self.layout.blob(digest).read_bytes())
            except (FileNotFoundError, ValueError, RecursionError):
                return {}
            self._configs[digest] = doc if isinstance(doc, dict) else {}
        return self._configs[digest]

    def info(self, digest: str) -> ModelInfo:
        manifest = self.manifest(digest)
        return ModelInfo(digest, self.index.models().get(digest, []), manifest, self.config(manifest))

    def list_models(self) -> list[ModelInfo]:
        return [self.info(digest) for digest in self.index.models()]

    # Names.
    def resolve(self, name: str) -> tuple[str, str]:
        """A name, an id or a unique id prefix -> (model id, the fully qualified name or id)."""
        if DIGEST_RE.match(name):
            if not self.index.has_model(name):
                raise not_found(f"no model with id {name} is in the store")
            return name, name
        prefix = _ID_PREFIX_RE.match(name)
        if name.startswith("sha256:"):
            if prefix is None:
                raise invalid(f"invalid model id {name[:80]!r}: expected sha256: and hex digits")
            return self._by_prefix(name), name
        ref = parse_reference(name)
        if ref.digest:
            if not self.index.has_model(ref.digest):
                raise not_found(how_to_get(ref))
            return ref.digest, str(ref)
        digest = self.index.digest_for_tag(str(ref))
        if digest is not None:
            return digest, str(ref)
        if prefix and len(prefix[1]) >= _MIN_BARE_PREFIX and self.index.ids_with_prefix("sha256:" + prefix[1]):
            return self._by_prefix("sha256:" + prefix[1]), name
        raise not_found(how_to_get(ref))

    def _by_prefix(self, prefix: str) -> str:
        ids = self.index.ids_with_prefix(prefix)
        if not ids:
            raise not_found(f"no model id starts with {prefix}")
        if len(ids) > 1:
            raise invalid(f"model id prefix {prefix} is ambiguous: it matches {len(ids)} models, give more digits")
        return ids[0]

    @staticmethod
    def tag_name(text: str) -> str:
        """A fully qualified tag for a name that must be a tag (not a digest reference)."""
        ref = parse_reference(text)
        if ref.digest:
            raise invalid(f"{text!r} is a digest reference; give a tag such as ai/name:latest")
        return str(ref)

    # Mutations.
    async def _mutate(self, change: Callable[[tuple[Entry, ...]], Iterable[Entry]]) -> list[str]:
        """Applies `change` to the index (hold the lock); removes models left without a tag and their
        unreferenced blobs. Returns the ids of the removed models."""
        before = self.index.models()
        await self.index.replace(change(self.index.entries))
        after = self.index.models()
        removed = [d for d in before if d not in after]
        if removed:
            await self._collect(removed)
        return removed

    async def _collect(self, removed: list[str]) -> tuple[int, int]:
        referenced = {b for d in self.index.models() for b in self._model_blob_digests(d)}
        candidates = {b for d in removed for b in self._model_blob_digests(d)} - referenced
        for d in removed:
            self._manifests.pop(d, None)
        return await self.blobs.remove(sorted(candidates), keep=referenced)

    async def put_manifest(self, raw: bytes, tags: list[str]) -> str:
        """Commits a manifest whose blobs the store holds and points `tags` at it; returns its id."""
        manifest = parse_manifest(raw)
        names = list(dict.fromkeys(self.tag_name(t) for t in tags))
        async with self.index.lock:
            for blob in manifest.blobs:
                stat = self.blobs.stat(blob.digest)
                if not stat.exists:
                    raise ServiceError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"manifest references blob {blob.digest} ({blob.media_type}), which the store does "
                        "not hold: write it with WriteBlob first",
                    )
                if stat.size != blob.size:
                    raise invalid(
                        f"manifest says blob {blob.digest} has {blob.size} bytes, the stored blob has {stat.size}"
                    )
            self._check_config(manifest)
            digest = await self.blobs.put_bytes(raw)

            def change(entries: tuple[Entry, ...]) -> list[Entry]:
                kept = [e for e in entries if e.tag not in names and not (e.digest == digest and e.tag is None)]
                if not names and not any(e.digest == digest for e in kept):
                    return [*kept, Entry(digest, len(raw), manifest.media_type, None)]
                return [*kept, *(Entry(digest, len(raw), manifest.media_type, n) for n in names)]

            await self._mutate(change)
            self.blobs.release([digest, *(b.digest for b in manifest.blobs)])
        return digest

    def _check_config(self, manifest: Manifest) -> None:
        """Refuses a config the listing would show only in part (it reads a wrongly typed field as empty)."""
        try:
            doc = json.loads(self.layout.blob(manifest.config.digest).read_bytes())
        except (ValueError, RecursionError):
            raise invalid(f"the model's config {manifest.config.digest} is not JSON") from None
        problem = config_problem(doc)
        if problem:
            raise invalid(f"the model's config: {problem}")

    async def tag(self, source: str, repo: str, tag: str) -> tuple[str, str]:
        """Points repo:tag at the model `source` names; returns (new tag, model id). A model that
        loses its last tag to this is kept by id (Docker's `<none>`): tagging never deletes a model."""
        ref = parse_reference(repo)
        if ref.digest:
            raise invalid(f"repo {repo!r} is a digest reference; give a repository such as ai/name")
        if tag:
            ref = parse_reference(f"{ref.name}:{tag}")
        target = str(ref)
        async with self.index.lock:
            digest, _ = self.resolve(source)
            entry = next(e for e in self.index.entries if e.digest == digest)

            def change(entries: tuple[Entry, ...]) -> list[Entry]:
                kept = [e for e in entries if e.tag != target and not (e.digest == digest and e.tag is None)]
                displaced = next((e for e in entries if e.tag == target and e.digest != digest), None)
                if displaced is not None and not any(e.digest == displaced.digest for e in kept):
                    kept.append(Entry(displaced.digest, displaced.size, displaced.media_type, None))
                return [*kept, Entry(digest, entry.size, entry.media_type, target)]

            await self._mutate(change)
        return target, digest

    async def delete(self, name: str, force: bool) -> list[DeleteAction]:
        """Untags a name (removing the model with its last tag), or removes a model by id."""
        async with self.index.lock:
            digest, reference = self.resolve(name)
            tags = self.index.models()[digest]
            by_tag = reference in tags
            if not by_tag and len(tags) > 1 and not force:
                raise ServiceError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"model {digest} has {len(tags)} tags ({', '.join(tags)}): delete a tag, or use force "
                    "to remove the model and all its tags",
                )
            untag = [reference] if by_tag else tags
            removed = await self._mutate(
                lambda entries: [e for e in entries if not (e.digest == digest and (e.tag in untag or not by_tag))]
            )
        return [DeleteAction(untagged=t) for t in untag] + [DeleteAction(deleted=d) for d in removed]

    async def purge(self) -> tuple[int, int]:
        """Removes every model and every blob, leased ones too; returns (models, bytes reclaimed)."""
        async with self.index.lock:
            count = len(self.index.models())
            await self.index.replace(())
            self._manifests.clear()
            _, reclaimed = await self.blobs.remove(self.layout.blob_digests(), leases=False)
            self.blobs.release(list(self.blobs.leased()))
        return count, reclaimed

    async def prune(self) -> tuple[int, int]:
        """Removes partial uploads and blobs no model references; returns (count, bytes)."""
        async with self.index.lock:
            referenced = {b for d in self.index.models() for b in self._model_blob_digests(d)}
            unreferenced = [d for d in self.layout.blob_digests() if d not in referenced]
            count, reclaimed = await self.blobs.remove(unreferenced, keep=referenced)
        partials, partial_bytes = await self.blobs.remove_partials()
        return count + partials, reclaimed + partial_bytes

    def check_blobs(self, info: ModelInfo) -> None:
        """DATA_LOSS naming the first blob of the model that is missing."""
        if info.manifest is None:
            raise ServiceError(
                grpc.StatusCode.DATA_LOSS,
                f"model {info.id} is broken: its manifest blob {info.id} is missing; delete it and pull it again",
            )
        for blob in info.manifest.blobs:
            if not self.blobs.exists(blob.digest):
                raise ServiceError(
                    grpc.StatusCode.DATA_LOSS,
                    f"model {info.id} is broken: blob {blob.digest} ({blob.media_type}) is missing; "
                    "delete the model and pull it again",
                )

    def blob_path(self, digest: str) -> str:
        return str(self.layout.blob(digest))

    def chat_template(self, manifest: Manifest) -> str:
        layers = manifest.layers_of(media_types.CHAT_TEMPLATE)
        if not layers:
            return ""
        return self.layout.blob(layers[0].digest).read_text(encoding="utf-8", errors="replace")
