"""Sampled tokens' log-probabilities as the contract's TokenLogprob messages."""

from __future__ import annotations

from modelrunner.runner.backends.base import LoadedModel
from modelrunner.runner.sampling import Sampled
from modelrunner.runner.textstream import TextStream
from modelrunner.v1 import runner_pb2


def token_text(model: LoadedModel, token: int) -> str:
    """A token's text; a token that ends inside a UTF-8 character shows its bytes replaced."""
    piece = model.piece(token)
    return TextStream().push(piece) or piece.decode("utf-8", "replace")


def logprobs_message(model: LoadedModel, sampled: list[Sampled]) -> list[runner_pb2.TokenLogprob]:
    return [
        runner_pb2.TokenLogprob(
            token=token_text(model, s.token),
            logprob=s.logprob,
            bytes=model.piece(s.token),
            top=[runner_pb2.TopLogprob(token=token_text(model, t), logprob=lp, bytes=model.piece(t)) for t, lp in s.top],
        )
        for s in sampled
    ]
