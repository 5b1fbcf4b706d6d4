"""Stored Responses, for `previous_response_id`, `GET`/`DELETE /v1/responses/{id}` and input_items.

Bounded by count and by size (the oldest go first: each entry as its JSON, since one Response may hold a
megabyte of tools or a whole conversation), and by age. Optionally kept across restarts in a JSON-lines log
in the gateway's state directory: each store or delete appends a line, and the log is rewritten with
only the live entries when it is opened and whenever it has grown to twice the bound.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from modelrunner.common import config
from modelrunner.common.config import Setting

log = logging.getLogger(__name__)

MAX_STORED = Setting("responses-max-stored", "1000", "stored Responses kept for previous_response_id (oldest go first)")
MAX_AGE = Setting("responses-max-age", str(30 * 24 * 3600), "seconds a stored Response is kept")
MAX_BYTES = Setting("responses-max-bytes", str(256 * 1024 * 1024),
                    "bytes of stored Responses kept, counted as JSON (oldest go first)")
PERSIST = Setting("responses-persist", "false",
                  "keep stored Responses across restarts, in DATA_DIR/gateway/responses.jsonl (true or false)")
SETTINGS = (MAX_STORED, MAX_AGE, MAX_BYTES, PERSIST)
FILE_NAME = "responses.jsonl"


@dataclass
class Stored:
    response: dict  # the Response object as answered
    input_items: list[dict]  # this request's input, as input_items lists it
    conversation: list[dict]  # every item up to and including this response's output, for the next turn
    stored_at: float


class ResponseStore:
    def __init__(self, max_count: int, max_age_s: float, path: Path | None = None,
                 clock: Callable[[], float] = time.time, max_bytes: int = int(MAX_BYTES.default)) -> None:
        if max_count < 1 or max_age_s <= 0 or max_bytes < 1:
            raise ValueError(f"{MAX_STORED.env}, {MAX_AGE.env} and {MAX_BYTES.env} must be positive, not "
                             f"{max_count}, {max_age_s} and {max_bytes}")
        self.max_count = max_count
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self.path = path
        self._clock = clock
        self._entries: OrderedDict[str, Stored] = OrderedDict()
        self._sizes: dict[str, int] = {}  # each entry's JSON length
        self._bytes = 0  # their sum
        self._logged = 0  # lines in the log
        self._logged_bytes = 0  # and their length
        if path is not None:
            self._load(path)

    @classmethod
    def from_settings(cls) -> ResponseStore:
        """The store the environment configures (MODELRUNNER_RESPONSES_*)."""
        persist = PERSIST.value().strip().lower() in ("1", "true", "yes", "on")
        path = config.data_dir(config.DATA_DIR.value()) / "gateway" / FILE_NAME if persist else None
        try:
            count, age, size = int(MAX_STORED.value()), float(MAX_AGE.value()), int(MAX_BYTES.value())
        except ValueError:
            raise ValueError(f"{MAX_STORED.env}, {MAX_AGE.env} and {MAX_BYTES.env} must be numbers, not "
                             f"{MAX_STORED.value()!r}, {MAX_AGE.value()!r} and {MAX_BYTES.value()!r}") from None
        return cls(count, age, path, max_bytes=size)

    def get(self, response_id: str) -> Stored | None:
        self._expire()
        return self._entries.get(response_id)

    def put(self, response_id: str, stored: Stored) -> bool:
        """Keeps `stored`, unless it alone is larger than the size bound (then the others stay)."""
        line = _line({"put": response_id, **asdict(stored)})
        if len(line) > self.max_bytes:
            log.warning("a Response larger than the store's bound was not kept",
                        extra={"fields": {"id": response_id, "bytes": len(line), "bound": self.max_bytes}})
            return False
        self._pop(response_id)
        self._entries[response_id] = stored
        self._sizes[response_id] = len(line)
        self._bytes += len(line)
        self._append(line)
        self._expire()
        self._trim()
        return True

    def delete(self, response_id: str) -> bool:
        self._expire()
        if self._pop(response_id) is None:
            return False
        self._append(_line({"delete": response_id}))
        return True

    def __len__(self) -> int:
        return len(self._entries)

    def _pop(self, response_id: str) -> Stored | None:
        self._bytes -= self._sizes.pop(response_id, 0)
        return self._entries.pop(response_id, None)

    def _expire(self) -> None:
        oldest = self._clock() - self.max_age_s
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.stored_at >= oldest:
                break
            self._pop(key)

    def _trim(self) -> None:
        while self._entries and (len(self._entries) > self.max_count or self._bytes > self.max_bytes):
            self._pop(next(iter(self._entries)))

    def _append(self, line: str) -> None:
        if self.path is None:
            return
        if self._logged >= 2 * self.max_count or self._logged_bytes >= 2 * self.max_bytes:
            self._rewrite()  # the entries already hold this change
            return
        with _private(self.path, os.O_APPEND) as file:
            file.write(line)
        self._logged += 1
        self._logged_bytes += len(line)

    def _load(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
                if "delete" in record:
                    self._pop(record["delete"])
                else:
                    key = record.pop("put")
                    stored = Stored(**record)
                    self._pop(key)
                    self._entries[key] = stored
                    self._sizes[key] = len(line) + 1
                    self._bytes += len(line) + 1
                    self._trim()  # as it was when stored: never more than the bounds in memory
            except (ValueError, TypeError, KeyError) as exc:  # a torn last line after a crash, say
                log.warning("skipping a bad line of the responses log",
                            extra={"fields": {"path": str(path), "line": number, "error": str(exc)}})
        self._expire()
        self._rewrite()

    def _rewrite(self) -> None:
        """Replaces the log with the live entries only (atomically: a crash leaves the old or the new)."""
        assert self.path is not None
        temporary = self.path.with_suffix(".tmp")
        with _private(temporary, os.O_TRUNC) as file:
            for key, entry in self._entries.items():
                file.write(_line({"put": key, **asdict(entry)}))
        os.replace(temporary, self.path)
        self._logged = len(self._entries)
        self._logged_bytes = self._bytes


def _line(record: dict) -> str:
    return json.dumps(record, separators=(",", ":")) + "\n"


def _private(path: Path, flag: int):
    """The file opened for writing, created readable by this user only (it holds conversations)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | flag, 0o600), "w", encoding="utf-8")
