"""Where things live in the store, and the atomic file helpers every write goes through.

The store is a standard OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/<hex>`) that
skopeo and oras can read, plus `ingest/`: partial uploads (`ingest/<hex>`, kept for resume) and
temporary files (`ingest/tmp-*`, removed at start-up). Nothing under `ingest/` is ever a blob, so
a reader of the layout never sees a half-written file. Paths are built from validated digests only:
no part of a model name ever becomes a path.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from modelrunner.common.errors import invalid
from modelrunner.common.names import DIGEST_RE

OCI_LAYOUT_VERSION = "1.0.0"
TMP_PREFIX = "tmp-"


def check_digest(digest: str) -> str:
    """The hex part of a `sha256:<64 hex>` digest; INVALID_ARGUMENT for anything else."""
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise invalid(f"invalid digest {digest[:80]!r}: expected 'sha256:' and 64 lowercase hex digits")
    return digest.removeprefix("sha256:")


def fsync_dir(path: Path) -> None:
    """Makes a rename or unlink in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Layout:
    """The paths of one store on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.ingest = root / "ingest"
        self.index_path = root / "index.json"
        self.oci_layout_path = root / "oci-layout"

    def create(self) -> None:
        """Creates the directories and the `oci-layout` file, and an empty index if there is none."""
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.ingest.mkdir(parents=True, exist_ok=True)
        if not self.oci_layout_path.exists():
            self.write_atomic(self.oci_layout_path, json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}).encode())

    def blob(self, digest: str) -> Path:
        return self.blobs / check_digest(digest)

    def partial(self, digest: str) -> Path:
        return self.ingest / check_digest(digest)

    def temp_file(self) -> tuple[int, Path]:
        """An open temporary file under ingest/ (same filesystem as the blobs, so rename is atomic)."""
        fd, name = tempfile.mkstemp(prefix=TMP_PREFIX, dir=self.ingest)
        return fd, Path(name)

    def write_atomic(self, path: Path, data: bytes) -> None:
        """Replaces `path` with `data`: temp file, fsync, rename, fsync of the directory."""
        fd, tmp = self.temp_file()
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)

    def clean_temp_files(self) -> list[Path]:
        """Removes temporary files of writes a crash interrupted; partial uploads stay for resume."""
        removed = [p for p in self.ingest.glob(f"{TMP_PREFIX}*") if p.is_file()]
        for p in removed:
            p.unlink(missing_ok=True)
        return removed

    def partials(self) -> list[Path]:
        return [p for p in self.ingest.iterdir() if p.is_file() and not p.name.startswith(TMP_PREFIX)]

    def blob_digests(self) -> list[str]:
        return [f"sha256:{p.name}" for p in self.blobs.iterdir() if DIGEST_RE.match(f"sha256:{p.name}")]
