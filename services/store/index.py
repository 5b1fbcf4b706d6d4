"""The tag index: `index.json` of the OCI layout, one manifest descriptor per tag.

Each descriptor's `org.opencontainers.image.ref.name` annotation is a fully qualified tag
(`docker.io/ai/gemma3:latest`), which is what `skopeo inspect oci:<dir>:<tag>` looks up; a model
stored by digest only has one descriptor without that annotation. The in-memory index is an
immutable snapshot replaced after `index.json` is atomically rewritten, so readers always see a
consistent index; mutations are serialised by `lock`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass

from modelrunner.store.layout import Layout

from modelrunner.common import media_types
from modelrunner.common.names import DIGEST_RE

REF_NAME = "org.opencontainers.image.ref.name"


class CorruptIndex(RuntimeError):
    """index.json cannot be read; the Store refuses to start rather than overwrite it."""


@dataclass(frozen=True)
class Entry:
    digest: str
    size: int
    media_type: str
    tag: str | None  # fully qualified, or None for a model kept by digest only

    def descriptor(self) -> dict:
        out: dict = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.tag:
            out["annotations"] = {REF_NAME: self.tag}
        return out


def parse_index(data: bytes) -> tuple[Entry, ...]:
    try:
        doc = json.loads(data)
        entries = []
        for d in doc.get("manifests", []):
            if not DIGEST_RE.match(d["digest"]):
                raise ValueError(f"bad digest {d['digest']!r}")
            tag = (d.get("annotations") or {}).get(REF_NAME)
            entries.append(Entry(d["digest"], int(d["size"]), d.get("mediaType", media_types.OCI_MANIFEST), tag))
        return tuple(entries)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptIndex(f"index.json is not a valid OCI index: {exc}") from exc


def render_index(entries: Iterable[Entry]) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": media_types.OCI_INDEX,
        "manifests": [e.descriptor() for e in entries],
    }
    return json.dumps(doc, indent=2).encode()


class Index:
    """Tags and the manifests they point at."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.entries: tuple[Entry, ...] = ()
        self.lock = asyncio.Lock()

    def load(self) -> None:
        if self.layout.index_path.exists():
            self.entries = parse_index(self.layout.index_path.read_bytes())
        else:
            self.layout.write_atomic(self.layout.index_path, render_index(()))

    async def replace(self, entries: Iterable[Entry]) -> None:
        """Writes the new index atomically, then makes it the one readers see. Hold `lock`."""
        assert self.lock.locked(), "index mutations must hold Index.lock"
        new = tuple(entries)
        await asyncio.to_thread(self.layout.write_atomic, self.layout.index_path, render_index(new))
        self.entries = new

    # Queries over the current snapshot.
    def models(self) -> dict[str, list[str]]:
        """Model id -> its tags, in index order."""
        out: dict[str, list[str]] = {}
        for e in self.entries:
            tags = out.setdefault(e.digest, [])
            if e.tag:
                tags.append(e.tag)
        return out

    def digest_for_tag(self, tag: str) -> str | None:
        return next((e.digest for e in self.entries if e.tag == tag), None)

    def has_model(self, digest: str) -> bool:
        return any(e.digest == digest for e in self.entries)

    def ids_with_prefix(self, prefix: str) -> list[str]:
        return sorted({e.digest for e in self.entries if e.digest.startswith(prefix)})
