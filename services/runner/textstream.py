"""Turns a stream of token bytes into whole-character text deltas, cut at stop strings.

A token may end inside a UTF-8 character (byte-fallback vocabularies split emoji and CJK), so bytes go
through an incremental decoder that holds incomplete sequences back. Text that might be the start of
a stop string is held back too, until it is known not to be one.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class TextStream:
    def __init__(self, stop: Sequence[str] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = [s for s in stop if s]
        self._held = ""
        self.stopped = False
        self.stop_sequence = ""  # the stop string that ended the text, once `stopped`

    def push(self, data: bytes) -> str:
        """Adds a token's bytes; returns the text now safe to send. Sets `stopped` on a stop string."""
        text = self._decoder.decode(data)
        if not self._stop:
            return text
        if not text:
            return ""
        pending = self._held + text
        cut = -1
        for stop in self._stop:
            at = pending.find(stop)
            if at != -1 and (cut == -1 or at < cut):
                cut, self.stop_sequence = at, stop
        if cut != -1:
            self._held = ""
            self.stopped = True
            return pending[:cut]
        keep = self._partial_stop_suffix(pending)
        self._held = pending[len(pending) - keep :] if keep else ""
        return pending[: len(pending) - keep]

    def flush(self) -> str:
        """The held text at the end of generation (a partial stop string is text after all)."""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return "" if self.stopped else text

    def _partial_stop_suffix(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
        best = 0
        for stop in self._stop:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best
