"""How many prompt tokens a decode step may carry while other sequences are decoding.

Every running stream waits for each step, so a step that carries a 2000-token prompt on a CPU (about
7 s for Gemma 3 270M on two cores, against 50 ms for a plain decode step) stalls every stream once for
that long. The budget keeps a step that carries prompt tokens within `factor` times a plain decode step
of the same sequences, from costs measured on this machine and this model:

    step(k prompt tokens) = plain + fixed + per_token * k

`plain` is an exponentially weighted plain-step time. `per_token` comes from steps of at least
FIT_TOKENS prompt tokens, where the fixed part is small beside the rest; `fixed` is what smaller steps
cost beyond `per_token * k` (llama.cpp's matrix products pay off only with many rows, so on a CPU a
16-token chunk costs far more per token than a 512-token one: one per-token figure taken from small
steps shrank every budget to its minimum and made a 200-token prompt's TTFT 7x llama-server's). With no
sequence decoding nobody waits: the whole batch goes to prompts.

Spreading a prompt over several steps costs its TTFT a plain step per step (bench/long_arrival.py
measures both sides of that trade), hence the default factor 0: no budget, as llama-server.
"""

from __future__ import annotations

# Weight of the newest measurement in the moving averages (about the last 10 steps count).
_WEIGHT = 0.1
# Prompt tokens a step carries at least, so that a long prompt always makes progress.
MIN_PROMPT_TOKENS = 16
# Steps with at least this many prompt tokens measure the per-token cost.
FIT_TOKENS = 128
# Until a step with prompt tokens was timed, a prompt arriving among decoding streams gets this much:
# enough for the first measurement to be one of per_token.
FIRST_PROMPT_TOKENS = FIT_TOKENS


class StepBudget:
    """Learns what a step costs and sizes the prompt part of the next one (decode thread only)."""

    def __init__(self, capacity: int, factor: float) -> None:
        """`capacity`: tokens a step may carry in all; `factor` <= 0: no limit (as llama-server)."""
        self.capacity = capacity
        self.factor = factor
        self.plain_seconds = 0.0  # a step with decoding sequences only
        self.token_seconds = 0.0  # what one more prompt token adds to a step
        self.fixed_seconds = 0.0  # what carrying any prompt tokens adds beyond that

    def prompt_tokens(self, decoding: int) -> int:
        """The prompt tokens the next step may carry beside `decoding` sequences' next tokens."""
        room = self.capacity - decoding
        if decoding == 0 or self.factor <= 0:
            return room
        if not self.token_seconds or not self.plain_seconds:
            return min(room, FIRST_PROMPT_TOKENS)
        allowed = ((self.factor - 1.0) * self.plain_seconds - self.fixed_seconds) / self.token_seconds
        return min(room, max(MIN_PROMPT_TOKENS, int(allowed)))

    def observe(self, decoding: int, prompt_tokens: int, seconds: float) -> None:
        """Records one step: `decoding` sequences' tokens and `prompt_tokens` prompt tokens took `seconds`."""
        if prompt_tokens == 0:
            self.plain_seconds = _average(self.plain_seconds, seconds)
            return
        # Without a plain step to subtract (nothing decodes yet) the whole step is charged to the
        # prompt tokens: a cost on the high side, so the first budget errs towards short stalls.
        extra = seconds - self.plain_seconds if decoding else seconds
        if extra <= 0:
            return
        if prompt_tokens >= FIT_TOKENS or not self.token_seconds:
            self.token_seconds = _average(self.token_seconds, extra / prompt_tokens)
        else:
            self.fixed_seconds = _average(self.fixed_seconds, max(0.0, extra - self.token_seconds * prompt_tokens))


def _average(old: float, new: float) -> float:
    return new if not old else old + _WEIGHT * (new - old)
