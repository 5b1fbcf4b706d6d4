"""Rerank and score, as llama.cpp's server and Docker Model Runner answer them, onto the Runner's Rerank.

`POST /rerank` (also /reranking, /v1/rerank and under /engines/v1 and /engines/llama.cpp/v1) takes Jina's
and Cohere's body (`query`, `documents`, `top_n`, `return_documents`) and answers `results` of `index`
and `relevance_score`, best first. `POST /score` takes vLLM's (`text_1`, `text_2`: one query against
many texts, or pairwise lists) and answers `data` of `index` and `score` in the order given.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Annotated

from fastapi import APIRouter, FastAPI, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from modelrunner.gateway.backends import Backends, UpstreamError
from modelrunner.gateway.errors import from_upstream
from modelrunner.gateway.openai_convert import ModelName, familiar, resolve_model
from modelrunner.gateway.streaming import cancel_on_disconnect
from modelrunner.v1 import runner_pb2

PREFIXES = ("", "/v1", "/engines/v1", "/engines/llama.cpp/v1")
MAX_DOCUMENTS = 1024  # the Runner's bound too
INT32_MAX = 2**31 - 1


def _utf8(text: str) -> str:
    """JSON can carry lone surrogate escapes ("\\ud800"), which no protobuf string can."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError("invalid_value", "not UTF-8 text (a lone surrogate escape)") from None
    return text


Text = Annotated[str, AfterValidator(_utf8)]


class Document(BaseModel):
    """Jina's and Cohere's document object; only its text is ranked."""

    text: Text


class RerankBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=1024)
    query: Text = Field(min_length=1)
    documents: list[Text | Document] = Field(min_length=1, max_length=MAX_DOCUMENTS)
    top_n: int | None = Field(default=None, ge=1, le=INT32_MAX, description="return the best N (default: all)")
    return_documents: bool = Field(default=False, description="echo each document's text in its result")

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class ScoreBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=1024)
    text_1: Text | list[Text] = Field(description="the query, or one query per text_2 entry")
    text_2: Text | list[Text] = Field(description="the texts to score against text_1")

    @model_validator(mode="after")
    def _pairs(self) -> ScoreBody:
        first, second = self.queries_and_texts()
        problem = None
        if not second:
            problem = "text_2 is empty: give at least one text to score"
        elif len(second) > MAX_DOCUMENTS:
            problem = f"text_2 has {len(second)} texts, more than the {MAX_DOCUMENTS} allowed"
        elif len(first) not in (1, len(second)):
            problem = f"text_1 has {len(first)} entries: give one, or one per text_2 entry ({len(second)})"
        elif any(not q for q in first):
            problem = "text_1: a query is empty"
        if problem:
            raise PydanticCustomError("invalid_value", problem)
        return self

    def queries_and_texts(self) -> tuple[list[str], list[str]]:
        return _listed(self.text_1), _listed(self.text_2)


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


async def _rerank(
    request: Request, model: ModelName, query: str, documents: list[str], top_n: int = 0
) -> runner_pb2.RerankResponse:
    backends: Backends = request.app.state.backends
    try:
        return await backends.runner.unary(
            "Rerank",
            runner_pb2.RerankRequest(model=model.qualified, query=query, documents=documents, top_n=top_n),
            request.app.state.options.long_timeout,
        )
    except UpstreamError as error:
        raise from_upstream(error, model=model.familiar) from None


def _served(reply: runner_pb2.RerankResponse, model: ModelName) -> str:
    return familiar(reply.model) if reply.model else model.familiar


def _usage(prompt_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}


def build_router() -> APIRouter:
    router = APIRouter(tags=["Rerank"])

    @router.post("/rerank", summary="Rank documents by relevance to a query (a reranker model)")
    async def rerank(request: Request, body: RerankBody) -> dict:
        model = resolve_model(body.model)
        texts = body.texts()
        reply = await cancel_on_disconnect(request, _rerank(request, model, body.query, texts, body.top_n or 0))
        results = []
        for r in reply.results:
            result: dict = {"index": r.index, "relevance_score": r.relevance_score}
            if body.return_documents:
                result["document"] = {"text": texts[r.index]}
            results.append(result)
        return {"id": f"rerank-{uuid.uuid4().hex}", "model": _served(reply, model), "object": "list",
                "usage": _usage(reply.prompt_tokens), "results": results}

    router.add_api_route("/reranking", rerank, methods=["POST"], include_in_schema=False)

    @router.post("/score", summary="Score text pairs with a reranker model (vLLM's shape)")
    async def score(request: Request, body: ScoreBody) -> dict:
        model = resolve_model(body.model)
        queries, texts = body.queries_and_texts()
        groups: dict[str, list[int]] = {}  # each distinct query is one Rerank of its texts
        for i in range(len(texts)):
            groups.setdefault(queries[0] if len(queries) == 1 else queries[i], []).append(i)
        calls = asyncio.gather(*(_rerank(request, model, q, [texts[i] for i in idx]) for q, idx in groups.items()))
        replies = await cancel_on_disconnect(request, calls)
        scores: dict[int, float] = {}
        for idx, reply in zip(groups.values(), replies):
            scores.update({idx[r.index]: r.relevance_score for r in reply.results})
        tokens = sum(r.prompt_tokens for r in replies)
        return {
            "id": f"score-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
            "model": _served(replies[0], model),
            "data": [{"index": i, "object": "score", "score": scores[i]} for i in range(len(texts))],
            "usage": {**_usage(tokens), "completion_tokens": 0},
        }

    return router


def install(app: FastAPI) -> None:
    router = build_router()
    for prefix in PREFIXES:
        app.include_router(router, prefix=prefix)

