"""top_k_ids picks the same candidates as a full argpartition, on rows of any size and shape."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from modelrunner.runner.sampling import Sampler, SamplingOptions, top_k_ids


def _reference(logits: np.ndarray, k: int) -> np.ndarray:
    return np.sort(logits[np.argpartition(logits, -k)[-k:]]) if k < logits.size else np.sort(logits)


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(1, 5000),
    k=st.integers(1, 300),
    seed=st.integers(0, 2**32 - 1),
    shape=st.sampled_from(["normal", "peaked", "ties", "banned"]),
)
def test_top_k_ids_matches_a_full_partition(size: int, k: int, seed: int, shape: str) -> None:
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal(size) * 3).astype(np.float32)
    if shape == "peaked":
        logits[rng.integers(0, size, 3)] += 40
    elif shape == "ties":
        logits = np.round(logits).astype(np.float32)
    elif shape == "banned":
        logits[rng.random(size) < 0.9] = -np.inf
    ids = top_k_ids(logits, k)
    assert ids.size == min(k, size) and np.unique(ids).size == ids.size
    np.testing.assert_array_equal(np.sort(logits[ids]), _reference(logits, k))


def test_gemma_sized_row_keeps_the_best_tokens() -> None:
    logits = np.random.default_rng(1).standard_normal(262_144).astype(np.float32)
    logits[[7, 200_000, 262_143]] = [50, 60, 70]  # the last token sits in the tail past the blocks
    assert {7, 200_000, 262_143} <= set(top_k_ids(logits, 40).tolist())


def test_sampling_with_top_k_stays_within_the_top_k() -> None:
    logits = np.random.default_rng(2).standard_normal(262_144).astype(np.float32)
    best = set(np.argpartition(logits, -5)[-5:].tolist())
    sampler = Sampler(SamplingOptions(temperature=5.0, top_k=5, top_p=1.0, min_p=0.0, seed=3), logits.size)
    picked = {sampler.sample(logits.copy()).token for _ in range(200)}
    assert picked <= best and len(picked) > 1
