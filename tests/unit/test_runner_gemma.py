"""The real default model, Gemma 3 270M (base, no chat template in its GGUF): chat answers are not
empty. That batching leaves greedy output unchanged is checked on the f32 tiny model
(test_runner_scheduler.py): llama.cpp's Q4_K CPU kernels round differently with the batch size, so on
Gemma the text alone and in a batch may diverge after a few tokens, depending on when requests join."""

from __future__ import annotations

import asyncio

import pytest

from modelrunner.runner.backends.base import LoadOptions
from modelrunner.runner.backends.llamacpp import LlamaCppBackend
from modelrunner.runner.chat import ChatRenderer, choose_format
from modelrunner.runner.sampling import SamplingOptions
from modelrunner.runner.scheduler import Job, Scheduler

pytestmark = pytest.mark.slow


@pytest.fixture
async def gemma(gemma_gguf):
    model = LlamaCppBackend().load([str(gemma_gguf)], LoadOptions(context_size=2048, parallel=4))
    sched = Scheduler(model, name="gemma")
    yield sched
    await asyncio.to_thread(sched.close)


def chat_job(sched: Scheduler, text: str, max_tokens: int) -> Job:
    facts = sched.model.facts
    fmt = choose_format(facts.chat_template, None, facts.architecture)
    prompt = ChatRenderer(fmt, facts.bos_text, facts.eos_text).render([{"role": "user", "content": text}])
    tokens = sched.model.tokenize(prompt, add_special=False, parse_special=True)
    eot = sched.model.token_for_text("<end_of_turn>")
    return Job(tokens, SamplingOptions(temperature=0), max_tokens=max_tokens, stop_tokens=frozenset({eot}))


async def run(sched: Scheduler, job: Job) -> tuple[str, str]:
    text, reason = "", ""
    async for chunk in sched.submit(job):
        text += chunk.text
        reason = chunk.finish_reason or reason
    return text, reason


async def test_say_hi_gets_a_non_empty_answer(gemma):
    assert gemma.model.facts.chat_template is None  # the base model's GGUF has none
    text, reason = await run(gemma, chat_job(gemma, "Say hi", 32))
    assert text.strip(), "Gemma answered with an empty string"
    assert reason in ("stop", "length")
