"""The free slots of one loaded model, and the tokens their KV cells still hold.

A finished request leaves its tokens (prompt and output) in its slot's cells instead of clearing them.
The next request goes to the free slot that holds the longest start of its prompt, so the next turn
of a chat (which resends the whole conversation), a shared system prompt or a prompt sent again skips
prefilling what is already there, as in llama-server's and Ollama's prompt caches. Held cells take
room in the model's KV cache: when a step finds no room, the least recently used one goes first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Assignment:
    slot: int
    reuse: int  # first tokens of the prompt the slot's cells already hold
    held: bool  # the slot's cells hold tokens: beyond `reuse`, they must go


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many first tokens `a` and `b` share."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    return int(np.argmin(np.asarray(a[:n]) == np.asarray(b[:n])))


class Slots:
    """Used by the scheduler's thread only."""

    def __init__(self, count: int, keep_prompts: bool = True) -> None:
        self.keep_prompts = keep_prompts
        self._free = list(range(count))  # the least recently released first
        self._held: dict[int, list[int]] = {}  # free slot -> the tokens its cells hold

    def __len__(self) -> int:
        return len(self._free)

    def take(self, prompt: Sequence[int]) -> Assignment:
        """The free slot for `prompt`: the one holding the longest start of it, when that start is at
        least half of the prompt or of what the slot holds (a short match is not worth a long cache),
        else an empty slot, else the least recently used. The prompt's last token is always left to
        prefill: its logits give the first output token."""
        limit = len(prompt) - 1
        best, best_reuse, worth = None, 0, False
        for slot in self._free:
            held = self._held.get(slot)
            if held:
                reuse = common_prefix(held, prompt[:limit])
                if reuse > best_reuse:
                    best, best_reuse, worth = slot, reuse, 2 * reuse >= min(len(prompt), len(held))
        if not worth:
            empty = next((s for s in self._free if s not in self._held), None)
            if empty is not None:
                best, best_reuse = empty, 0
            elif best is None:
                best = self._free[0]
        self._free.remove(best)
        held = self._held.pop(best, None) is not None
        return Assignment(best, best_reuse, held)

    def release(self, slot: int, tokens: list[int] | None) -> bool:
        """Frees `slot`, whose cells hold `tokens` (None: nothing worth keeping). True when they are
        kept for later prompts; False when the caller must clear them."""
        self._free.append(slot)
        if tokens and self.keep_prompts:
            self._held[slot] = tokens
            return True
        return False

    def evict(self) -> int | None:
        """Forgets the least recently used held slot and returns it, for its cells to be cleared."""
        for slot in self._free:
            if slot in self._held:
                del self._held[slot]
                return slot
        return None
