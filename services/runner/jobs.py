"""A validated GenerateRequest as the scheduler's Job: the chat rendered with the model's template,
the prompt tokenized (and with `truncate`, cut to fit: truncation.py), the sampling options built for
the loaded model."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import grpc

from modelrunner.common.errors import ServiceError, invalid
from modelrunner.runner.chat import TemplateError
from modelrunner.runner.sampling_params import sampling_options
from modelrunner.runner.scheduler import Job, prompt_too_long
from modelrunner.runner.truncation import TooLong, fit_chat, fit_prompt, prompt_budget
from modelrunner.runner.validation import check_logit_bias_tokens, field_error
from modelrunner.v1 import runner_pb2

if TYPE_CHECKING:
    from modelrunner.runner.backends.base import LoadedModel
    from modelrunner.runner.manager import Loaded

BASE_MODEL_CHAT_MAX_TOKENS = 256
# Tokens beyond the budget in a text cut by bytes: those where the cut fell are dropped.
CUT_SLACK = 16


def messages_of(chat: runner_pb2.Chat) -> list[dict]:
    """The chat's messages as a chat template expects them (OpenAI's shape)."""
    out = []
    for m in chat.messages:
        msg: dict = {"role": m.role, "content": m.content}
        if m.name:
            msg["name"] = m.name
        if m.tool_call_id:
            msg["tool_call_id"] = m.tool_call_id
        if m.tool_calls:
            msg["tool_calls"] = [
                {"id": c.id, "type": c.type or "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in m.tool_calls
            ]
        out.append(msg)
    return out


def prompt_text(request: runner_pb2.GenerateRequest, entry: Loaded) -> str:
    if request.WhichOneof("input") != "chat":
        return request.prompt
    if entry.renderer is None:
        raise ServiceError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"{entry.name} has no usable chat template: send a raw prompt instead",
        )
    return _render(entry, messages_of(request.chat), request.chat.tools_json)


def _render(entry: Loaded, messages: list[dict], tools_json: str) -> str:
    tools = json.loads(tools_json) if tools_json else None  # validated JSON
    try:
        return entry.renderer.render(messages, tools)
    except TemplateError as exc:
        raise field_error("chat.messages", f"cannot be formatted: {exc}") from None


def _tokens(entry: Loaded, text: str) -> list[int]:
    bos = entry.model.facts.bos_text
    return entry.model.tokenize(text, add_special=not (bos and text.startswith(bos)), parse_special=True)


def fewest_tokens(model: LoadedModel, text: str) -> int:
    """The vocabulary's lower bound on the tokens of `text` (LoadedModel.fewest_tokens)."""
    return model.fewest_tokens(text.encode("utf-8", errors="surrogatepass"))


def part_with_tokens(model: LoadedModel, text: str, tokens: int, *, end: bool) -> str:
    """The end (or the start) of `text` with at least `tokens` tokens by the vocabulary's bound (all of
    it without one), so that cutting a huge text to a context does not tokenize all of it. Pass a few
    tokens more than needed: the cut may split what the whole text would tokenize as one."""
    data = text.encode("utf-8", errors="surrogatepass")
    size = max(tokens, 1)
    while size < len(data) and model.fewest_tokens(data[-size:] if end else data[:size]) < tokens:
        size *= 2
    return (data[-size:] if end else data[:size]).decode("utf-8", errors="ignore")


def prompt_tokens(
    request: runner_pb2.GenerateRequest, entry: Loaded, max_tokens: int, *, fit: bool = True
) -> list[int]:
    """The prompt's tokens; with `truncate`, cut to leave room for the answer when they do not fit.
    A text whose bytes alone show it cannot fit is not tokenized whole (unless not `fit`: counted)."""
    text = prompt_text(request, entry)
    context = entry.model.facts.context_size
    budget = prompt_budget(context, max_tokens)
    least = fewest_tokens(entry.model, text)
    if not request.truncate:
        if least >= context and fit:
            raise invalid(prompt_too_long(f"at least {least}", context, entry.name))
        return _tokens(entry, text)
    if least <= budget and len(tokens := _tokens(entry, text)) <= budget:
        return tokens
    chat = request.WhichOneof("input") == "chat"
    try:
        if chat:
            return fit_chat(messages_of(request.chat), lambda m: _render(entry, m, request.chat.tools_json),
                            lambda t: _tokens(entry, t), budget, lambda t: fewest_tokens(entry.model, t))
        start = entry.model.tokenize("", add_special=True, parse_special=False)
        tail = entry.model.tokenize(part_with_tokens(entry.model, text, budget + CUT_SLACK, end=True),
                                    add_special=False, parse_special=True)
        return fit_prompt(start + tail, start, budget)
    except TooLong as exc:
        least = "the system messages and the last message come" if chat else "the prompt comes"
        raise field_error("chat.messages" if chat else "prompt", (
            f"{least} to {exc}, but the context of {context} tokens leaves {budget} for the "
            f"prompt beside the room for the answer: shorten it, or configure a larger context size "
            f"(`modelrunner configure {entry.name} --context-size N`, or POST /engines/_configure with "
            f'{{"model": "{entry.name}", "context-size": N}})'
        )) from None


def default_max_tokens(request: runner_pb2.GenerateRequest, entry: Loaded) -> int:
    """0 (until end of generation or a full context), except for a chat with a base model.

    A model without a chat template of its own (the bundled Gemma 3 270M is one) is not trained to
    end a turn, so a chat with no max_tokens would run on until the context is full: minutes of
    repetition. Such chats get BASE_MODEL_CHAT_MAX_TOKENS, and finish_reason "length" says so.
    """
    builtin = entry.renderer is not None and entry.renderer.format.source.startswith("builtin:")
    return BASE_MODEL_CHAT_MAX_TOKENS if builtin and request.WhichOneof("input") == "chat" else 0


def build_job(request: runner_pb2.GenerateRequest, entry: Loaded, *, fit: bool = True) -> Job:
    """The job without its grammar (grammars.py compiles that last, so that nothing can fail after
    it). A max_tokens past the context needs no clamp: a sequence also ends when the context is full.
    Not `fit`: a prompt past the context is kept, to be counted (the Tokenize RPC)."""
    model = entry.model
    if model.facts.reranker:  # llama.cpp's server refuses too; an encoder-only one would abort the engine
        raise field_error("model", f"{entry.name} is a reranker: it scores pairs (POST /rerank) and cannot generate")
    check_logit_bias_tokens(request.sampling, model.facts.vocab_size)
    max_tokens = request.sampling.max_tokens or default_max_tokens(request, entry)
    prompt = prompt_tokens(request, entry, max_tokens, fit=fit)
    banned = model.facts.stop_tokens | entry.stop_tokens if request.sampling.ignore_eos else frozenset()
    options = sampling_options(
        request.sampling,
        logprobs=request.top_logprobs if request.logprobs else -1,
        banned=banned,
        vocab_size=model.facts.vocab_size,
        defaults=entry.engine.sampling_defaults,
    )
    return Job(
        prompt=prompt,
        sampling=options,
        max_tokens=max_tokens,
        stop=tuple(request.sampling.stop),
        stop_tokens=entry.stop_tokens,
        ignore_eos=request.sampling.ignore_eos,
    )
