"""The Rerank RPC: a reranker model scores each (query, document) pair; the best come first.

Pairs are laid out by the backend as the model expects (its `rerank` template) and scored by llama.cpp's
rank pooling in the model's own pooling context, off the event loop, beside any generation in flight.
"""

from __future__ import annotations

import asyncio

import grpc

from modelrunner.common.errors import ServiceError, invalid
from modelrunner.runner.backends.base import InputTooLong
from modelrunner.runner.manager import ModelManager
from modelrunner.runner.validation import MAX_TEXT_CHARS, check_model, check_text, field_error
from modelrunner.v1 import runner_pb2

MAX_DOCUMENTS = 1024


def _validate(request: runner_pb2.RerankRequest) -> None:
    check_model(request.model)
    if not request.query:
        raise field_error("query", "is required")
    if not request.documents:
        raise field_error("documents", "is empty: give at least one document to rank")
    if len(request.documents) > MAX_DOCUMENTS:
        raise field_error("documents", f"has {len(request.documents)} entries, more than the {MAX_DOCUMENTS} allowed")
    if request.top_n < 0:
        raise field_error("top_n", f"must be >= 0 (0: every document), not {request.top_n}")
    if len(request.query) + sum(len(d) for d in request.documents) > MAX_TEXT_CHARS:
        raise invalid(f"query and documents together are longer than {MAX_TEXT_CHARS} characters")
    check_text("query", request.query)
    for i, document in enumerate(request.documents):
        check_text(f"documents[{i}]", document)


async def rerank(manager: ModelManager, request: runner_pb2.RerankRequest) -> runner_pb2.RerankResponse:
    _validate(request)
    async with manager.acquire(request.model, request.keep_alive) as entry:
        model = entry.model
        if not model.facts.reranker:
            raise field_error(
                "model", f"{entry.name} is not a reranker: rerank needs a model whose GGUF pools by rank "
                "(a classifier head, e.g. a BGE or Qwen3 reranker)"
            )
        pairs = [model.rank_prompt(request.query, document) for document in request.documents]
        try:
            scores = await asyncio.to_thread(model.rank, pairs)
        except InputTooLong as exc:
            raise field_error(
                f"documents[{exc.index}]", f"with the query it makes {exc.n_tokens} tokens, more than the "
                f"{exc.n_ctx} of the model's context: shorten it or raise the model's context size"
            ) from exc
        except RuntimeError as exc:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, f"ranking failed: {exc}") from exc
        name = entry.name
    order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)  # stable: ties keep their order
    return runner_pb2.RerankResponse(
        results=[runner_pb2.RerankResult(index=i, relevance_score=scores[i]) for i in order[: request.top_n or None]],
        prompt_tokens=sum(len(p) for p in pairs),
        model=name,
    )
