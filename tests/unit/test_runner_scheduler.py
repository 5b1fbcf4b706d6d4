"""The continuous-batching scheduler on the tiny GGUF: batching does not change greedy output,
cancellation frees the slot, overload and over-long prompts fail clearly, usage is exact, a burst is
prefilled together."""

from __future__ import annotations

import asyncio
import time

import pytest

from modelrunner.runner.backends.base import LoadOptions
from modelrunner.runner.backends.llamacpp import LlamaCppBackend
from modelrunner.runner.sampling import SamplingOptions
from modelrunner.runner.scheduler import GATHER_SECONDS, Arrivals, Job, QueueFull, Scheduler
from modelrunner.runner.step_budget import MIN_PROMPT_TOKENS

GREEDY = SamplingOptions(temperature=0)


@pytest.fixture
async def scheduler(tiny_gguf):
    model = LlamaCppBackend().load([str(tiny_gguf)], LoadOptions(context_size=512, parallel=4, threads=1))
    sched = Scheduler(model, name="tiny", max_queue=2, keep_prompts=False)  # batching alone
    yield sched
    await asyncio.to_thread(sched.close)


def prompt_of(sched: Scheduler, text: str) -> list[int]:
    return sched.model.tokenize(text, add_special=True, parse_special=False)


async def collect(stream):
    text, last = "", None
    async for chunk in stream:
        text += chunk.text
        last = chunk
    return text, last


async def test_greedy_output_is_the_same_alone_and_in_a_batch_of_four(scheduler):
    prompts = [prompt_of(scheduler, p) for p in ("hello there", "abc", "a longer prompt with words", "xyz")]
    alone = [await collect(scheduler.submit(Job(p, GREEDY, max_tokens=24, ignore_eos=True))) for p in prompts]
    together = await asyncio.gather(
        *[collect(scheduler.submit(Job(p, GREEDY, max_tokens=24, ignore_eos=True))) for p in prompts]
    )
    assert [t for t, _ in together] == [t for t, _ in alone]
    for (_, last), prompt in zip(together, prompts):
        assert last.finish_reason == "length"
        assert last.prompt_tokens == len(prompt)
        assert last.completion_tokens == 24


async def test_cancelling_one_stream_of_four_leaves_the_others_correct_and_frees_its_slot(scheduler):
    prompts = [prompt_of(scheduler, p) for p in ("one", "two", "three", "four")]
    expected = [await collect(scheduler.submit(Job(p, GREEDY, max_tokens=40, ignore_eos=True))) for p in prompts]
    streams = [scheduler.submit(Job(p, GREEDY, max_tokens=40, ignore_eos=True)) for p in prompts]
    first = await streams[1].__anext__()
    assert first.text is not None
    streams[1].cancel()
    results = await asyncio.gather(*[collect(s) for i, s in enumerate(streams) if i != 1])
    assert [t for t, _ in results] == [t for i, (t, _) in enumerate(expected) if i != 1]
    for _ in range(100):
        if scheduler.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert scheduler.busy_slots == 0 and scheduler.in_flight == 0
    # The freed slot is reusable at once: a fifth request runs and matches its solo output.
    again = await collect(scheduler.submit(Job(prompts[1], GREEDY, max_tokens=40, ignore_eos=True)))
    assert again[0] == expected[1][0]


async def test_full_queue_is_refused_with_a_clear_message(scheduler):
    prompt = prompt_of(scheduler, "busy")
    streams = [scheduler.submit(Job(prompt, GREEDY, max_tokens=200, ignore_eos=True)) for _ in range(6)]
    with pytest.raises(QueueFull, match="queue full: 2 requests waiting"):
        scheduler.submit(Job(prompt, GREEDY, max_tokens=1))
    for s in streams:
        s.cancel()


async def test_prompt_longer_than_the_context_names_both_numbers(scheduler):
    with pytest.raises(ValueError, match="600 tokens but the context holds 512"):
        scheduler.submit(Job([5] * 600, GREEDY))


async def test_stop_string_cuts_the_text_and_reports_stop(scheduler):
    prompt = prompt_of(scheduler, "hello there")
    full, _ = await collect(scheduler.submit(Job(prompt, GREEDY, max_tokens=30, ignore_eos=True)))
    marker = full[5:8]
    text, last = await collect(scheduler.submit(Job(prompt, GREEDY, max_tokens=30, stop=(marker,), ignore_eos=True)))
    assert last.finish_reason == "stop"
    assert text == full[: full.index(marker)]


async def test_long_prompt_is_prefilled_in_chunks_while_another_stream_runs(tiny_gguf):
    model = LlamaCppBackend().load(
        [str(tiny_gguf)], LoadOptions(context_size=512, parallel=2, threads=1, batch_size=32)
    )
    sched = Scheduler(model, name="tiny-chunks", keep_prompts=False)  # the second long prompt is prefilled again
    try:
        long_prompt = sched.model.tokenize("x" * 300, add_special=True, parse_special=False)
        solo, _ = await collect(sched.submit(Job(long_prompt, GREEDY, max_tokens=8, ignore_eos=True)))
        short = sched.submit(Job(prompt_of(sched, "hi"), GREEDY, max_tokens=60, ignore_eos=True))
        await short.__anext__()
        text, last = await collect(sched.submit(Job(long_prompt, GREEDY, max_tokens=8, ignore_eos=True)))
        assert text == solo and last.prompt_tokens == len(long_prompt)
        await collect(short)
    finally:
        await asyncio.to_thread(sched.close)


def record_step_sizes(model) -> list[int]:
    """Wraps the model's decode: the list gets the number of tokens each step carried."""
    sizes: list[int] = []
    decode = model.decode

    def recorded() -> int:
        sizes.append(model._n)
        return decode()

    model.decode = recorded
    return sizes


async def test_a_burst_arriving_while_idle_is_prefilled_in_one_step(tiny_gguf):
    model = LlamaCppBackend().load([str(tiny_gguf)], LoadOptions(context_size=512, parallel=4, threads=1))
    arrivals = Arrivals()
    sched = Scheduler(model, name="tiny-burst", arrivals=arrivals)
    steps = record_step_sizes(model)
    try:
        first, second = prompt_of(sched, "hello there"), prompt_of(sched, "abc")
        with arrivals.arriving():  # the second request is on its way (resolving, tokenizing)
            a = sched.submit(Job(first, GREEDY, max_tokens=4, ignore_eos=True))
            await asyncio.sleep(0.005)
        b = sched.submit(Job(second, GREEDY, max_tokens=4, ignore_eos=True))
        await asyncio.gather(collect(a), collect(b))
        assert steps[0] == len(first) + len(second)
    finally:
        await asyncio.to_thread(sched.close)


async def test_a_request_waits_for_others_on_their_way_no_longer_than_the_gather_limit(tiny_gguf):
    model = LlamaCppBackend().load([str(tiny_gguf)], LoadOptions(context_size=512, parallel=4, threads=1))
    arrivals = Arrivals()
    sched = Scheduler(model, name="tiny-stuck", arrivals=arrivals)
    try:
        with arrivals.arriving():  # e.g. a request whose name the Store is slow to resolve
            started = time.perf_counter()
            stream = sched.submit(Job(prompt_of(sched, "hi"), GREEDY, max_tokens=2, ignore_eos=True))
            await stream.__anext__()
            waited = time.perf_counter() - started
            await collect(stream)
        assert GATHER_SECONDS <= waited < GATHER_SECONDS + 0.5
    finally:
        await asyncio.to_thread(sched.close)


async def test_a_prompt_that_starts_with_a_finished_request_skips_its_prefill(tiny_gguf):
    """The next turn of a chat resends the conversation, and a prompt may come again: only what the
    slot does not hold is prefilled, and the greedy output is the one without the prompt cache."""

    async def answers(keep_prompts: bool) -> tuple[list[str], list[int]]:
        model = LlamaCppBackend().load([str(tiny_gguf)], LoadOptions(context_size=512, parallel=2, threads=1))
        sched = Scheduler(model, name="tiny-cache", keep_prompts=keep_prompts)
        steps = record_step_sizes(model)
        try:
            first = prompt_of(sched, "hello there")
            one, _ = await collect(sched.submit(Job(first, GREEDY, max_tokens=6, ignore_eos=True)))
            turn = first + sched.model.tokenize(one + " and then", add_special=False, parse_special=False)
            texts, prefills = [one], []
            for prompt in (turn, first):
                steps.clear()
                text, last = await collect(sched.submit(Job(prompt, GREEDY, max_tokens=6, ignore_eos=True)))
                assert last.prompt_tokens == len(prompt)
                texts.append(text)
                prefills.append(steps[0])
            return texts, prefills + [len(turn), len(first)]
        finally:
            await asyncio.to_thread(sched.close)

    cached, (turn_step, again_step, turn_len, first_len) = await answers(True)
    fresh, (fresh_turn_step, fresh_again_step, _, _) = await answers(False)
    assert cached == fresh
    assert (fresh_turn_step, fresh_again_step) == (turn_len, first_len)
    assert turn_step <= turn_len - first_len  # at least the first prompt came from the cache
    assert again_step == 1  # the same prompt again: only its last token, for its logits


async def test_held_prompts_give_way_when_the_kv_cache_is_full(tiny_gguf):
    """Held cells never cut a running request short: they are freed first."""
    model = LlamaCppBackend().load([str(tiny_gguf)], LoadOptions(context_size=256, parallel=4, threads=1))
    sched = Scheduler(model, name="tiny-full")
    try:
        for letter in "abc":  # three slots holding 24 + 59 tokens each: 249 of the 256 cells
            await collect(sched.submit(Job(prompt_of(sched, letter * 20), GREEDY, max_tokens=60, ignore_eos=True)))
        assert len(sched._slot_pool._held) == 3
        _, last = await collect(sched.submit(Job(prompt_of(sched, "d" * 20), GREEDY, max_tokens=120, ignore_eos=True)))
        assert (last.finish_reason, last.completion_tokens) == ("length", 120)
    finally:
        await asyncio.to_thread(sched.close)


async def test_a_shared_start_is_reused_without_cutting_the_conversation_that_holds_it(tiny_gguf):
    """A new chat sharing only a system prompt with a long conversation goes to an empty slot and
    shares those cells; the conversation's next turn still finds all of its own."""

    async def run(keep_prompts: bool) -> tuple[list[str], list[int], int]:
        model = LlamaCppBackend().load([str(tiny_gguf)], LoadOptions(context_size=512, parallel=2, threads=1))
        sched = Scheduler(model, name="tiny-share", keep_prompts=keep_prompts)
        steps = record_step_sizes(model)
        system = prompt_of(sched, "You are terse. " * 3)
        tail = lambda text: sched.model.tokenize(text, add_special=False, parse_special=False)  # noqa: E731
        try:
            texts, prefills = [], []
            conversation = system + tail(" Tell me a long story about the sea and the wind.")
            for prompt in (conversation, system + tail(" hi"), conversation + tail(" more")):
                steps.clear()
                text, _ = await collect(sched.submit(Job(prompt, GREEDY, max_tokens=40, ignore_eos=True)))
                texts.append(text)
                prefills.append(steps[0])
            return texts, prefills, len(system)
        finally:
            await asyncio.to_thread(sched.close)

    cached, (_, short_step, turn_step), system = await run(True)
    fresh, (conversation, fresh_short, fresh_turn), _ = await run(False)  # prefills: the whole prompts
    assert cached == fresh
    assert short_step <= fresh_short - system  # the system prompt came from the conversation's cells
    assert turn_step == fresh_turn - conversation  # and the conversation kept all of its own


async def test_cells_that_cannot_serve_as_a_prefix_are_prefilled_again(tiny_gguf):
    model = LlamaCppBackend().load([str(tiny_gguf)], LoadOptions(context_size=512, parallel=1, threads=1))
    sched = Scheduler(model, name="tiny-swa")
    model.keep_prefix = lambda seq, n: False  # as llama.cpp answers when a sliding window moved on
    steps = record_step_sizes(model)
    try:
        prompt = prompt_of(sched, "hello there")
        first, _ = await collect(sched.submit(Job(prompt, GREEDY, max_tokens=6, ignore_eos=True)))
        steps.clear()
        again, last = await collect(sched.submit(Job(prompt, GREEDY, max_tokens=6, ignore_eos=True)))
        assert again == first and last.cached_tokens == 0 and steps[0] == len(prompt)
    finally:
        await asyncio.to_thread(sched.close)


async def test_kv_cache_usage_counts_running_sequences_not_held_prompts(tiny_gguf):
    model = LlamaCppBackend().load([str(tiny_gguf)], LoadOptions(context_size=512, parallel=2, threads=1))
    sched = Scheduler(model, name="tiny", max_queue=2, keep_prompts=True)
    try:
        assert sched.kv_cache_usage == 0.0
        prompt = prompt_of(sched, "a prompt that stays in its slot")
        stream = sched.submit(Job(prompt, GREEDY, max_tokens=400, ignore_eos=True))
        await stream.__anext__()
        assert sched.kv_cache_usage >= len(prompt) / 512  # the running sequence's cells
        stream.cancel()
        while sched.in_flight:  # the decode loop retires the cancelled sequence at its next step
            await asyncio.sleep(0.01)
        assert sched.kv_cache_usage == 0.0  # its cells stay in the slot, as a cache, not as load
    finally:
        await asyncio.to_thread(sched.close)


async def test_a_prompt_arriving_while_others_decode_is_spread_over_steps(tiny_gguf):
    """With a prefill step factor of 1 (no step may last longer than a plain one), the long prompt goes
    in the smallest chunks while a stream decodes, and answers exactly what it answers alone."""
    model = LlamaCppBackend().load(
        [str(tiny_gguf)], LoadOptions(context_size=1024, parallel=2, threads=1, batch_size=512)
    )
    sched = Scheduler(model, name="tiny-budget", keep_prompts=False, prefill_step_factor=1)
    steps = record_step_sizes(model)
    try:
        long_prompt = sched.model.tokenize("x" * 400, add_special=True, parse_special=False)
        solo, _ = await collect(sched.submit(Job(long_prompt, GREEDY, max_tokens=4, ignore_eos=True)))
        assert steps[0] == len(long_prompt)  # nothing decoding: the whole prompt in one step
        short = sched.submit(Job(prompt_of(sched, "hi"), GREEDY, max_tokens=400, ignore_eos=True))
        await short.__anext__()
        steps.clear()
        text, last = await collect(sched.submit(Job(long_prompt, GREEDY, max_tokens=4, ignore_eos=True)))
        assert text == solo and last.prompt_tokens == len(long_prompt)
        assert len(long_prompt) > 4 * MIN_PROMPT_TOKENS
        assert max(steps) == MIN_PROMPT_TOKENS + 1  # the prompt's chunk and the stream's next token
        short.cancel()
    finally:
        await asyncio.to_thread(sched.close)
