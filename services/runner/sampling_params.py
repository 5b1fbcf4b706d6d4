"""The request's sampling parameters (already validated) as the sampler's options."""

from __future__ import annotations

from collections.abc import Mapping

from modelrunner.runner.sampling import (
    DEFAULT_MIN_P,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    SamplingOptions,
)
from modelrunner.runner.validation import RANDOM_SEED
from modelrunner.v1 import runner_pb2


def sampling_options(
    p: runner_pb2.SamplingParams, *, logprobs: int, banned: frozenset[int], vocab_size: int,
    defaults: Mapping[str, float] | None = None,
) -> SamplingOptions:
    """`logprobs`: -1 for none, else how many top alternatives; `banned`: tokens never sampled;
    `defaults`: the model's own sampling defaults, for what the request leaves unset."""
    model_defaults = defaults or {}

    def opt(name: str, default):
        return getattr(p, name) if p.HasField(name) else model_defaults.get(name, default)

    top_k = opt("top_k", DEFAULT_TOP_K)
    seed = opt("seed", None)
    return SamplingOptions(
        temperature=opt("temperature", DEFAULT_TEMPERATURE),
        top_k=0 if top_k >= vocab_size else top_k,  # 0: the whole vocabulary
        top_p=opt("top_p", DEFAULT_TOP_P),
        min_p=opt("min_p", DEFAULT_MIN_P),
        seed=None if seed == RANDOM_SEED else seed,
        repeat_penalty=opt("repeat_penalty", 1.0),
        presence_penalty=opt("presence_penalty", 0.0),
        frequency_penalty=opt("frequency_penalty", 0.0),
        logit_bias=dict(p.logit_bias),
        banned_tokens=banned,
        logprobs=logprobs,
    )
