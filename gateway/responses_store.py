"""Stored Responses, for `previous_response_id`, `GET`/`DELETE /v1/responses/{id}` and input_items.

Bounded by count (the oldest go first) and by age. Optionally kept across restarts in a JSON-lines log
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
PERSIST = Setting("responses-persist", "false",
                  "keep stored Responses across restarts, in DATA_DIR/gateway/responses.jsonl (true or false)")
SETTINGS = (MAX_STORED, MAX_AGE, PERSIST)
FILE_NAME = "responses.jsonl"


@dataclass
class Stored:
    response: dict  # the Response object as answered
    input_items: list[dict]  # this request's input, as input_items lists it
    conversation: list[dict]  # every item up to and including this response's output, for the next turn
    stored_at: float


class ResponseStore:
    def __init__(self, max_count: int, max_age_s: float, path: Path | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if max_count < 1 or max_age_s <= 0:
            raise ValueError(f"{MAX_STORED.env} and {MAX_AGE.env} must be positive, not {max_count} and {max_age_s}")
        self.max_count = max_count
        self.max_age_s = max_age_s
        self.path = path
        self._clock = clock
        self._entries: OrderedDict[str, Stored] = OrderedDict()
        self._logged = 0  # lines in the log
        if path is not None:
            self._load(path)

    @classmethod
    def from_settings(cls) -> ResponseStore:
        """The store the environment configures (MODELRUNNER_RESPONSES_*)."""
        persist = PERSIST.value().strip().lower() in ("1", "true", "yes", "on")
        path = config.data_dir(config.DATA_DIR.value()) / "gateway" / FILE_NAME if persist else None
        try:
            count, age = int(MAX_STORED.value()), float(MAX_AGE.value())
        except ValueError:
            raise ValueError(f"{MAX_STORED.env} and {MAX_AGE.env} must be numbers, not "
                             f"{MAX_STORED.value()!r} and {MAX_AGE.value()!r}") from None
        return cls(count, age, path)

    def get(self, response_id: str) -> Stored | None:
        self._expire()
        return self._entries.get(response_id)

    def put(self, response_id: str, stored: Stored) -> None:
        self._entries[response_id] = stored
        self._entries.move_to_end(response_id)
        self._append({"put": response_id, **asdict(stored)})
        self._expire()
        while len(self._entries) > self.max_count:
            self._entries.popitem(last=False)

    def delete(self, response_id: str) -> bool:
        self._expire()
        if self._entries.pop(response_id, None) is None:
            return False
        self._append({"delete": response_id})
        return True

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self) -> None:
        oldest = self._clock() - self.max_age_s
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.stored_at >= oldest:
                break
            del self._entries[key]

    def _append(self, record: dict) -> None:
        if self.path is None:
            return
        if self._logged >= 2 * self.max_count:
            self._rewrite()  # the entries already hold this change
            return
        with _private(self.path, os.O_APPEND) as file:
            file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._logged += 1

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
                    self._entries.pop(record["delete"], None)
                else:
                    key = record.pop("put")
                    self._entries[key] = Stored(**record)
                    self._entries.move_to_end(key)
            except (ValueError, TypeError, KeyError) as exc:  # a torn last line after a crash, say
                log.warning("skipping a bad line of the responses log",
                            extra={"fields": {"path": str(path), "line": number, "error": str(exc)}})
        self._expire()
        while len(self._entries) > self.max_count:
            self._entries.popitem(last=False)
        self._rewrite()

    def _rewrite(self) -> None:
        """Replaces the log with the live entries only (atomically: a crash leaves the old or the new)."""
        assert self.path is not None
        temporary = self.path.with_suffix(".tmp")
        with _private(temporary, os.O_TRUNC) as file:
            for key, entry in self._entries.items():
                file.write(json.dumps({"put": key, **asdict(entry)}, separators=(",", ":")) + "\n")
        os.replace(temporary, self.path)
        self._logged = len(self._entries)


def _private(path: Path, flag: int):
    """The file opened for writing, created readable by this user only (it holds conversations)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | flag, 0o600), "w", encoding="utf-8")
