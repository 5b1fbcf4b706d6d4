"""The scheduler under faults, on the tiny GGUF: a sequence whose grammar leaves nothing legal ends
cleanly, one whose sampling breaks fails alone, and every way out gives its place and grammar back."""

from __future__ import annotations

import asyncio
import json
import math
import threading

import numpy as np
import pytest

from modelrunner.runner.backends.base import Grammar, LoadOptions
from modelrunner.runner.backends.llamacpp import LlamaCppBackend
from modelrunner.runner.grammars import JSON_OBJECT_SCHEMA, gbnf_for_schema
from modelrunner.runner.sampling import SamplingOptions
from modelrunner.runner.scheduler import GenerationError, Job, QueueFull, Scheduler

GREEDY = SamplingOptions(temperature=0)


@pytest.fixture
async def scheduler(tiny_gguf):
    model = LlamaCppBackend().load([str(tiny_gguf)], LoadOptions(context_size=512, parallel=2, threads=1))
    sched = Scheduler(model, name="tiny", max_queue=1, keep_prompts=False)
    yield sched
    await asyncio.to_thread(sched.close)


async def collect(stream) -> tuple[str, str]:
    text, reason = "", ""
    async for chunk in stream:
        text += chunk.text
        reason = chunk.finish_reason or reason
    return text, reason


def hold_decode(sched: Scheduler) -> threading.Event:
    """Holds the decode loop inside its next step until the event is set."""
    gate = threading.Event()
    decode = sched.model.decode
    sched.model.decode = lambda: gate.wait(30) and decode()
    return gate


async def drained(sched: Scheduler) -> bool:
    for _ in range(200):
        if sched.in_flight == 0 and sched.busy_slots == 0:
            return True
        await asyncio.sleep(0.01)
    return False


class CountingGrammar(Grammar):
    """Wraps a real grammar; counts closes, and can break on its n-th use."""

    def __init__(self, inner: Grammar, fail_at: int = -1) -> None:
        self.inner, self.fail_at, self.uses, self.closed = inner, fail_at, 0, 0

    def apply(self, logits: np.ndarray) -> None:
        self.uses += 1
        if self.uses == self.fail_at:
            raise RuntimeError("injected fault")
        self.inner.apply(logits)

    def allows(self, token: int) -> bool:
        self.uses += 1
        if self.uses == self.fail_at:
            raise RuntimeError("injected fault")
        return self.inner.allows(token)

    def accept(self, token: int) -> None:
        self.inner.accept(token)

    def close(self) -> None:
        self.closed += 1
        self.inner.close()


def json_grammar(sched: Scheduler, fail_at: int = -1) -> CountingGrammar:
    return CountingGrammar(sched.model.grammar(gbnf_for_schema(JSON_OBJECT_SCHEMA)), fail_at)


def prompt(sched: Scheduler, text: str = "hello") -> list[int]:
    return sched.model.tokenize(text, add_special=True, parse_special=False)


@pytest.mark.parametrize("bias", [{ord("{"): math.nan}, {ord("a"): math.nan}, {ord("}"): math.inf}])
async def test_non_finite_biases_with_a_grammar_never_feed_it_an_illegal_token(scheduler, bias):
    """The issue's abort: logit_bias NaN + json_object made llama.cpp accept a token the grammar
    forbids ("Unexpected empty grammar stack"). The Runner validates biases; the scheduler must hold
    even so."""
    grammar = json_grammar(scheduler)
    options = SamplingOptions(temperature=0, logit_bias=bias)
    text, reason = await collect(scheduler.submit(Job(prompt(scheduler), options, max_tokens=60, grammar=grammar)))
    assert reason in ("stop", "length")
    if reason == "stop" and text:  # ended by the model, so the grammar was complete
        json.loads(text)
    assert grammar.closed == 1 and await drained(scheduler)


async def test_a_finished_value_with_end_of_generation_banned_ends_with_stop(scheduler):
    grammar = CountingGrammar(scheduler.model.grammar(gbnf_for_schema('{"enum": [7]}')))
    eos = scheduler.model.facts.stop_tokens
    options = SamplingOptions(temperature=0, banned_tokens=eos)
    job = Job(prompt(scheduler), options, max_tokens=100, ignore_eos=True, grammar=grammar)
    text, reason = await collect(scheduler.submit(job))
    assert (json.loads(text), reason) == (7, "stop")


async def test_a_sequence_whose_sampling_breaks_fails_alone(scheduler):
    healthy = Job(prompt(scheduler, "abc"), GREEDY, max_tokens=30, ignore_eos=True)
    expected = await collect(scheduler.submit(healthy))
    broken = json_grammar(scheduler, fail_at=3)
    failing = scheduler.submit(Job(prompt(scheduler), GREEDY, max_tokens=30, grammar=broken))
    other = scheduler.submit(healthy)
    with pytest.raises(GenerationError, match="injected fault") as err:
        await collect(failing)
    assert not err.value.retryable
    assert await collect(other) == expected
    assert broken.closed == 1 and await drained(scheduler)


async def test_refused_and_cancelled_jobs_give_back_their_place_and_grammar(scheduler):
    gate = hold_decode(scheduler)
    running = [scheduler.submit(Job(prompt(scheduler), GREEDY, max_tokens=400, ignore_eos=True)) for _ in range(2)]
    queued_grammar = json_grammar(scheduler)
    queued = scheduler.submit(Job(prompt(scheduler), GREEDY, max_tokens=5, grammar=queued_grammar))
    refused = json_grammar(scheduler)
    with pytest.raises(QueueFull):
        scheduler.submit(Job(prompt(scheduler), GREEDY, grammar=refused))
    too_long = json_grammar(scheduler)
    with pytest.raises(ValueError):
        scheduler.submit(Job([5] * 600, GREEDY, grammar=too_long))
    assert (refused.closed, too_long.closed) == (1, 1)
    assert scheduler.in_flight == 3
    for stream in [queued, *running]:
        stream.cancel()
    gate.set()
    assert await drained(scheduler)
    assert queued_grammar.closed == 1


async def test_a_closed_scheduler_refuses_work_and_ends_what_it_held(tiny_gguf):
    model = LlamaCppBackend().load([str(tiny_gguf)], LoadOptions(context_size=256, parallel=1, threads=1))
    sched = Scheduler(model, name="tiny", max_queue=4)
    tokens = prompt(sched)
    gate = hold_decode(sched)
    streams = [sched.submit(Job(tokens, GREEDY, max_tokens=200, ignore_eos=True)) for _ in range(3)]
    closing = asyncio.create_task(asyncio.to_thread(sched.close))
    while not sched._closing:  # close() has begun: the step held in decode is the last
        await asyncio.sleep(0.01)
    gate.set()
    await closing
    for stream in streams:
        with pytest.raises(GenerationError, match="unloaded") as err:
            await collect(stream)
        assert err.value.retryable
    assert sched.in_flight == 0
    with pytest.raises(GenerationError, match="not running"):
        sched.submit(Job(tokens, GREEDY))
