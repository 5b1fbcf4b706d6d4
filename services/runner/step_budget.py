"""How many prompt tokens a decode step may carry while other sequences are decoding.

Every running stream waits for each step, so a step that carries a 512-token prompt chunk on a CPU
(about 2 s for Gemma 3 270M on two cores, against 40 ms for a plain decode step) stalls every stream
each time, and a long prompt stalls them over and over. The budget keeps a step that carries prompt
tokens within `factor` times a plain decode step of the same sequences, from costs measured on this
machine and this model: an exponentially weighted plain-step time, and a per-prompt-token cost taken
from the steps that carried prompt tokens. With no sequence decoding nobody waits: the whole batch
goes to prompts.
"""

from __future__ import annotations

# Weight of the newest measurement in the moving averages (about the last 10 steps count).
_WEIGHT = 0.1
# Prompt tokens a step carries at least, so that a long prompt always makes progress.
MIN_PROMPT_TOKENS = 16
# Until a step with prompt tokens was timed, a prompt arriving among decoding streams gets this much.
FIRST_PROMPT_TOKENS = 64


class StepBudget:
    """Learns what a step costs and sizes the prompt part of the next one (decode thread only)."""

    def __init__(self, capacity: int, factor: float) -> None:
        """`capacity`: tokens a step may carry in all; `factor` <= 0: no limit (as llama-server)."""
        self.capacity = capacity
        self.factor = factor
        self.plain_seconds = 0.0  # a step with decoding sequences only
        self.token_seconds = 0.0  # what one prompt token adds to a step

    def prompt_tokens(self, decoding: int) -> int:
        """The prompt tokens the next step may carry beside `decoding` sequences' next tokens."""
        room = self.capacity - decoding
        if decoding == 0 or self.factor <= 0:
            return room
        if not self.token_seconds or not self.plain_seconds:
            return min(room, FIRST_PROMPT_TOKENS)
        allowed = (self.factor - 1.0) * self.plain_seconds / self.token_seconds
        return min(room, max(MIN_PROMPT_TOKENS, int(allowed)))

    def observe(self, decoding: int, prompt_tokens: int, seconds: float) -> None:
        """Records one step: `decoding` sequences' tokens and `prompt_tokens` prompt tokens took `seconds`."""
        if prompt_tokens == 0:
            self.plain_seconds = _average(self.plain_seconds, seconds)
            return
        # Without a plain step to subtract (nothing decodes yet) the whole step is charged to the
        # prompt tokens: a cost on the high side, so the first budget errs towards short stalls.
        extra = seconds - self.plain_seconds if decoding else seconds
        if extra > 0:
            self.token_seconds = _average(self.token_seconds, extra / prompt_tokens)


def _average(old: float, new: float) -> float:
    return new if not old else old + _WEIGHT * (new - old)
