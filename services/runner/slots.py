"""The free slots of one loaded model, and the tokens their KV cells still hold.

A finished request leaves its tokens (prompt and output) in its slot's cells instead of clearing them.
A new request reuses the longest start of its prompt that a free slot holds, so the next turn of a
chat (which resends the whole conversation), a shared system prompt or a prompt sent again skips
prefilling what is already there, as llama-server's and Ollama's prompt caches do. Held cells take
room in the model's KV cache: when a step finds no room, the least recently used go first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Assignment:
    """Where a prompt goes: `slot`, whose first `reuse` prompt tokens come from `source`'s cells
    (`slot` itself, or another free slot whose cells the two sequences then share)."""

    slot: int
    reuse: int
    source: int | None  # None: nothing reused
    held: bool  # `slot`'s cells hold tokens: beyond what is reused from them, they must go


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

    @property
    def held_tokens(self) -> int:
        """Tokens the free slots' cells still hold (for later prompts)."""
        return sum(len(tokens) for tokens in list(self._held.values()))

    def take(self, prompt: Sequence[int]) -> Assignment:
        """The slot for `prompt` and what it reuses. The free slot holding the longest start of the
        prompt is taken when that start is at least half of what it holds (little is lost), or when no
        slot is empty (taking another would lose a whole cache, not a tail). Otherwise the prompt goes
        to an empty slot and shares that start's cells, so a long conversation is not cut down for a
        short match such as a system prompt. With no match, an empty slot, else the least recently
        used. The prompt's last token is always left to prefill: its logits give the first token."""
        reusable = prompt[: len(prompt) - 1]
        source, reuse = None, 0
        for slot in self._free:
            held = self._held.get(slot)
            if held:
                n = common_prefix(held, reusable)
                if n > reuse:
                    source, reuse = slot, n
        empty = next((s for s in self._free if s not in self._held), None)
        if empty is not None and (source is None or 2 * reuse < len(self._held[source])):
            slot = empty
        else:
            slot = source if source is not None else self._free[0]
        self._free.remove(slot)
        held = self._held.pop(slot, None) is not None
        return Assignment(slot, reuse, source, held)

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
