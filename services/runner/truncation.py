"""Cutting a request that does not fit the context to one that does, as Ollama does (GenerateRequest's
`truncate`), instead of refusing it: long conversations in Open WebUI or the `ollama` client go on.

The prompt must leave room for the answer: `max_tokens` when the request sets one (at most half the
context, so that a large one does not rule every prompt out), else a quarter of the context.
- A chat keeps its system messages and the longest run of its latest messages that fits, starting at
  a user message (templates that want the turns to alternate refuse an assistant first) or, at the
  least, at its last message (with the assistant's tool call, when that is a tool result). Each
  candidate is rendered with the model's template and counted; a binary search over the starts
  renders a chat of n messages about log2(n) times.
- A raw prompt keeps its start tokens (the BOS the tokenizer adds) and the end of its tokens, as
  Ollama's runner does.
Where even the least does not fit, the request is refused, saying how to enlarge the context.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Render = Callable[[list[dict]], str]
Tokenize = Callable[[str], list[int]]
Fewest = Callable[[str], int]  # a lower bound on a text's tokens, to skip tokenizing what cannot fit


class TooLong(ValueError):
    """Even the least that may be kept does not fit: it has `tokens` tokens (at least that many when
    `at_least`: it was too long to be worth tokenizing)."""

    def __init__(self, tokens: int, *, at_least: bool = False) -> None:
        super().__init__(f"{'at least ' if at_least else ''}{tokens} tokens")
        self.tokens = tokens
        self.at_least = at_least


def prompt_budget(context_size: int, max_tokens: int) -> int:
    """The most prompt tokens that leave room for the answer."""
    room = min(max_tokens, context_size // 2) if max_tokens > 0 else context_size // 4
    return context_size - max(room, 1)


def fit_chat(
    messages: list[dict], render: Render, tokenize: Tokenize, budget: int, fewest: Fewest = lambda _text: 0
) -> list[int]:
    """The tokens of the longest chat that fits `budget`."""

    def fitting(start: int) -> list[int] | TooLong:
        text = render(_kept(messages, start))
        least = fewest(text)
        if least > budget:
            return TooLong(least, at_least=True)
        tokens = tokenize(text)
        return tokens if len(tokens) <= budget else TooLong(len(tokens))

    starts = _starts(messages)
    lo, hi = 0, len(starts) - 1  # starts[hi] is the least chat; find the first start whose chat fits
    tokens = fitting(starts[hi])
    if isinstance(tokens, TooLong):
        raise tokens
    while lo < hi:
        mid = (lo + hi) // 2
        candidate = fitting(starts[mid])
        if isinstance(candidate, TooLong):
            lo = mid + 1
        else:
            hi, tokens = mid, candidate
    return tokens


def fit_prompt(tokens: list[int], start: Sequence[int], budget: int) -> list[int]:
    """A raw prompt's start tokens and as many of its last tokens as fit `budget`."""
    keep = len(start) if tokens[: len(start)] == list(start) else 0
    if budget <= keep:
        raise TooLong(len(tokens))
    return tokens[:keep] + tokens[max(keep, len(tokens) - (budget - keep)):]


def _starts(messages: list[dict]) -> list[int]:
    """Where a cut chat may start, in order: each user message, then the last message's turn."""
    last = _turn_start(messages, len(messages) - 1)
    return [i for i in range(last) if messages[i]["role"] == "user"] + [last]


def _turn_start(messages: list[dict], index: int) -> int:
    """`index`, or where the tool call that its tool result (and those before it) answer is."""
    start = index
    while start > 0 and messages[start]["role"] == "tool":
        start -= 1
    if start < index and messages[start]["role"] == "assistant" and messages[start].get("tool_calls"):
        return start
    return index


def _kept(messages: list[dict], start: int) -> list[dict]:
    return [m for m in messages[:start] if m["role"] == "system"] + messages[start:]
