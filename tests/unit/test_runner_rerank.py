"""Rerank and Tokenize in the Runner's servicer, on real llama.cpp: the tiny Qwen3 reranker (rank
pooling, a yes/no head, a rerank template), the tiny BERT cross-encoder (no template) and the tiny llama
(not a reranker)."""

from __future__ import annotations

import grpc
import pytest

from modelrunner.common.errors import ServiceError
from modelrunner.runner.service import RunnerService
from modelrunner.v1 import runner_pb2
from tests.support.runner_doubles import FakeClock, make_manager
from tests.support.tiny_gguf import write_tiny_bert_reranker, write_tiny_reranker

DOCUMENTS = ["a cat sat on the mat", "stock prices fell", "the cat purrs", "", "rain tomorrow"]


class Context:
    def add_done_callback(self, callback) -> None:
        pass


@pytest.fixture
async def service(tiny_gguf, tmp_path):
    files = {"rr": str(write_tiny_reranker(tmp_path / "rr.gguf")), "tiny": str(tiny_gguf),
             "bert": str(write_tiny_bert_reranker(tmp_path / "bert.gguf"))}
    manager = make_manager(files, tmp_path, FakeClock())
    yield RunnerService(manager)
    await manager.close()


def rerank_request(documents=DOCUMENTS, **fields) -> runner_pb2.RerankRequest:
    return runner_pb2.RerankRequest(**{"model": "rr", "query": "cats", "documents": documents, **fields})


async def test_rerank_scores_every_pair_and_sorts_best_first(service):
    reply = await service.Rerank(rerank_request(), None)
    assert reply.model == "docker.io/ai/rr:latest"
    assert sorted(r.index for r in reply.results) == list(range(len(DOCUMENTS)))
    scores = [r.relevance_score for r in reply.results]
    assert scores == sorted(scores, reverse=True)
    assert all(0 < s < 1 for s in scores)  # P("yes"): llama.cpp softmaxes a Qwen3 reranker's head
    assert len(set(scores)) > 1
    model = (await service.manager.load("rr")).model
    assert reply.prompt_tokens == sum(len(model.rank_prompt("cats", d)) for d in DOCUMENTS)


async def test_a_pair_scores_the_same_alone_or_among_others(service):
    together = {r.index: r.relevance_score for r in (await service.Rerank(rerank_request(), None)).results}
    for i in (0, 2):
        alone = (await service.Rerank(rerank_request([DOCUMENTS[i]]), None)).results
        assert alone[0].relevance_score == pytest.approx(together[i], abs=5e-3)  # batch-mates shift float rounding only
    other_query = await service.Rerank(rerank_request(query="stocks"), None)
    assert {r.index: r.relevance_score for r in other_query.results} != together


async def test_top_n_keeps_the_best(service):
    everything = (await service.Rerank(rerank_request(), None)).results
    best = (await service.Rerank(rerank_request(top_n=2), None)).results
    assert [r.index for r in best] == [r.index for r in everything[:2]]


async def test_the_rerank_template_lays_out_each_pair(service):
    model = (await service.manager.load("rr")).model
    pair = model.rank_prompt("q {document}", "d")  # filled in one pass: the query's text stays as is
    assert pair == model.tokenize("<s>query: q {document}\ndocument: d\nrelevant:", add_special=False,
                                  parse_special=True)
    assert pair[0] == 1  # "<s>" is BOS


async def test_a_bert_cross_encoder_ranks_pairs_laid_out_without_a_template(service):
    reply = await service.Rerank(rerank_request(model="bert"), None)
    scores = [r.relevance_score for r in reply.results]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) > 1
    assert any(s < 0 for s in scores)  # a raw logit, as llama.cpp's server reports it
    model = (await service.manager.load("bert")).model
    q, d = (model.tokenize(t, add_special=False, parse_special=False) for t in ("cats", "stocks"))
    assert model.rank_prompt("cats", "stocks") == [1, *q, *d]  # BOS; this vocabulary adds no EOS or SEP
    alone = await service.Rerank(rerank_request([DOCUMENTS[1]], model="bert"), None)
    assert alone.results[0].relevance_score == pytest.approx(
        next(r.relevance_score for r in reply.results if r.index == 1), abs=5e-3)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": ""}, "model: is required"),
        ({"query": ""}, "query: is required"),
        ({"documents": []}, "documents: is empty"),
        ({"top_n": -1}, "top_n: must be >= 0"),
        ({"documents": ["x"] * 1025}, "documents: has 1025 entries"),
    ],
)
async def test_rerank_rejects_bad_requests(service, fields, message):
    with pytest.raises(ServiceError) as exc:
        await service.Rerank(rerank_request(**fields), None)
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in exc.value.message


async def test_a_model_that_is_not_a_reranker_is_invalid_argument(service):
    with pytest.raises(ServiceError) as exc:
        await service.Rerank(rerank_request(model="tiny"), None)
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "docker.io/ai/tiny:latest is not a reranker" in exc.value.message


async def test_a_document_over_the_context_names_it(service):
    with pytest.raises(ServiceError) as exc:
        await service.Rerank(rerank_request(["short", "x" * 400]), None)  # the context is 256 tokens
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.message.startswith("documents[1]: with the query it makes")


async def test_a_reranker_still_embeds(service):
    reply = await service.Embed(runner_pb2.EmbedRequest(model="rr", inputs=["a", "bb"]), None)
    assert [len(e.values) for e in reply.embeddings] == [64, 64]


CHAT = runner_pb2.Chat(
    messages=[
        runner_pb2.ChatMessage(role="system", content="be brief"),
        runner_pb2.ChatMessage(role="user", content="hello there"),
    ],
    tools_json='[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]',
)


@pytest.mark.parametrize("field", ["chat", "prompt"])
async def test_tokenize_counts_what_generate_prefills(service, field):
    source = {"chat": CHAT} if field == "chat" else {"prompt": "<s>once upon a time"}
    counted = await service.Tokenize(runner_pb2.TokenizeRequest(model="tiny", **source), None)
    generate = runner_pb2.GenerateRequest(
        model="tiny", sampling=runner_pb2.SamplingParams(temperature=0, max_tokens=1), **source
    )
    chunks = [c async for c in service.Generate(generate, Context())]
    assert counted.model == "docker.io/ai/tiny:latest"
    assert counted.count == chunks[-1].usage.prompt_tokens > 0


async def test_tokenize_refuses_what_generate_refuses(service):
    with pytest.raises(ServiceError) as exc:
        await service.Tokenize(runner_pb2.TokenizeRequest(model="tiny"), None)
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT
    bad_role = runner_pb2.Chat(messages=[runner_pb2.ChatMessage(role="robot", content="hi")])
    with pytest.raises(ServiceError) as exc:
        await service.Tokenize(runner_pb2.TokenizeRequest(model="tiny", chat=bad_role), None)
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("model", ["rr", "bert"])
async def test_a_reranker_refuses_to_generate(service, model):
    """An encoder-only one would abort llama.cpp (GGML_ASSERT on n_outputs) if it were asked to."""
    request = runner_pb2.GenerateRequest(model=model, prompt="hi", sampling=runner_pb2.SamplingParams(max_tokens=2))
    with pytest.raises(ServiceError) as exc:
        [c async for c in service.Generate(request, Context())]
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"docker.io/ai/{model}:latest is a reranker" in exc.value.message
