"""The per-step prompt budget: sized from measured step costs, never starving a prompt."""

from __future__ import annotations

import pytest

from modelrunner.runner.model_settings import parse_runtime_flags
from modelrunner.runner.step_budget import FIRST_PROMPT_TOKENS, FIT_TOKENS, MIN_PROMPT_TOKENS, StepBudget


def test_nothing_decoding_gets_the_whole_batch() -> None:
    budget = StepBudget(capacity=512, factor=4)
    assert budget.prompt_tokens(decoding=0) == 512


def test_no_limit_leaves_the_batch_to_prompts() -> None:
    budget = StepBudget(capacity=512, factor=0)
    budget.observe(decoding=7, prompt_tokens=0, seconds=0.04)
    assert budget.prompt_tokens(decoding=7) == 505


def test_before_any_prompt_step_was_timed_a_small_first_chunk() -> None:
    budget = StepBudget(capacity=512, factor=4)
    budget.observe(decoding=7, prompt_tokens=0, seconds=0.04)
    assert budget.prompt_tokens(decoding=7) == FIRST_PROMPT_TOKENS


def test_budget_keeps_a_step_within_factor_plain_steps() -> None:
    budget = StepBudget(capacity=512, factor=4)
    budget.observe(decoding=7, prompt_tokens=0, seconds=0.040)
    budget.observe(decoding=7, prompt_tokens=100, seconds=0.040 + 100 * 0.002)
    # 3 plain steps' worth of extra time at 2 ms a prompt token
    assert budget.prompt_tokens(decoding=7) == 60


def test_a_slow_token_cost_still_leaves_progress() -> None:
    budget = StepBudget(capacity=512, factor=1.5)
    budget.observe(decoding=3, prompt_tokens=0, seconds=0.01)
    budget.observe(decoding=3, prompt_tokens=64, seconds=0.01 + 64 * 0.05)
    assert budget.prompt_tokens(decoding=3) == MIN_PROMPT_TOKENS


def test_budget_never_exceeds_the_room_in_the_batch() -> None:
    budget = StepBudget(capacity=32, factor=1000)
    budget.observe(decoding=30, prompt_tokens=0, seconds=0.05)
    budget.observe(decoding=30, prompt_tokens=2, seconds=0.0501)
    assert budget.prompt_tokens(decoding=30) == 2


def test_first_prompt_alone_is_charged_in_full() -> None:
    """With nothing decoding, the step's whole time counts as prompt cost: the budget errs short."""
    budget = StepBudget(capacity=512, factor=4)
    budget.observe(decoding=0, prompt_tokens=500, seconds=1.0)
    budget.observe(decoding=1, prompt_tokens=0, seconds=0.02)
    assert budget.token_seconds == pytest.approx(0.002)
    assert budget.prompt_tokens(decoding=1) == 30


def test_small_chunks_cost_a_fixed_part_not_a_higher_rate_per_token() -> None:
    """A 16-token chunk that costs as much as 40 ms + 16 x 2 ms must not be read as 4.5 ms a token."""
    budget = StepBudget(capacity=2048, factor=8)
    budget.observe(decoding=7, prompt_tokens=0, seconds=0.050)
    budget.observe(decoding=7, prompt_tokens=FIT_TOKENS, seconds=0.050 + FIT_TOKENS * 0.002)
    budget.observe(decoding=7, prompt_tokens=16, seconds=0.050 + 0.040 + 16 * 0.002)
    assert budget.token_seconds == pytest.approx(0.002)
    assert budget.fixed_seconds == pytest.approx(0.040)
    assert budget.prompt_tokens(decoding=7) == int((7 * 0.050 - 0.040) / 0.002)  # 155, not 77


def test_the_per_token_cost_follows_large_steps_only() -> None:
    budget = StepBudget(capacity=2048, factor=4)
    budget.observe(decoding=7, prompt_tokens=0, seconds=0.050)
    budget.observe(decoding=7, prompt_tokens=512, seconds=0.050 + 512 * 0.003)
    for _ in range(20):
        budget.observe(decoding=7, prompt_tokens=32, seconds=0.050 + 0.100)
    assert budget.token_seconds == pytest.approx(0.003)
    budget.observe(decoding=7, prompt_tokens=256, seconds=0.050 + 256 * 0.004)
    assert budget.token_seconds == pytest.approx(0.003 + 0.1 * 0.001)


def test_a_fixed_cost_beyond_the_budget_leaves_the_minimum() -> None:
    budget = StepBudget(capacity=2048, factor=2)
    budget.observe(decoding=3, prompt_tokens=0, seconds=0.050)
    budget.observe(decoding=3, prompt_tokens=FIT_TOKENS, seconds=0.050 + FIT_TOKENS * 0.002)
    budget.observe(decoding=3, prompt_tokens=16, seconds=0.050 + 0.200)
    assert budget.prompt_tokens(decoding=3) == MIN_PROMPT_TOKENS


@pytest.mark.parametrize("raw, expected", [("4", 4.0), ("2.5", 2.5), ("0", 0.0)])
def test_runtime_flag_sets_the_factor(raw: str, expected: float) -> None:
    assert parse_runtime_flags([f"--prefill-step-factor={raw}"]) == {"prefill_step_factor": expected}


@pytest.mark.parametrize("raw", ["0.5", "nan", "-1", "fast", "1e9"])
def test_runtime_flag_rejects_bad_factors(raw: str) -> None:
    with pytest.raises(ValueError, match="--prefill-step-factor"):
        parse_runtime_flags([f"--prefill-step-factor={raw}"])
