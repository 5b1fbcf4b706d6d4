"""Continuous batching for one loaded model: one decode thread, one `llama_decode` per step.

Every step carries the next token of each running sequence plus prompt chunks of the sequences still
prefilling, up to the batch size, so a long prompt is spread over several steps instead of stalling
the streams already running. New requests join between steps; a cancelled one leaves the batch at the
start of the next step. A finished or cancelled request's KV cells stay in its slot for later prompts
that start with the same tokens (slots.py). The asyncio side talks to the thread through a
thread-safe command queue, and gets each step's output in ONE `call_soon_threadsafe` per event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from modelrunner.runner.backends.base import Grammar, LoadedModel
from modelrunner.runner.metrics import RunnerMetrics
from modelrunner.runner.sampling import Sampled, Sampler, SamplingOptions
from modelrunner.runner.slots import Slots
from modelrunner.runner.step_budget import StepBudget
from modelrunner.runner.textstream import TextStream

log = logging.getLogger(__name__)


def prompt_too_long(tokens: str, context: int, name: str) -> str:
    """The refusal of a prompt of `tokens` tokens (a count, or "at least N") that the context cannot hold."""
    return (
        f"the prompt has {tokens} tokens but the context holds {context} tokens: shorten the prompt or "
        f"configure a larger context size (`modelrunner configure {name} --context-size N`, or POST "
        "/engines/_configure)"
    )


# How long the first request after idle may wait for the others of its burst, and how long a burst
# may pause between two requests before it is taken as complete (see Scheduler._gather).
GATHER_SECONDS = 0.02
GATHER_QUIET_SECONDS = 0.003


class QueueFull(Exception):
    """Too many requests wait for this model."""


class GenerationError(Exception):
    """The engine failed while decoding (not the request's fault). `retryable`: the model went away
    (unloaded, its decode loop died), so the same request may succeed later."""

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class Admission:
    """The requests in flight for one model (running or queued), against its slots and queue bound.

    A place is taken in one call and given back once (Place.release is idempotent), whichever way the
    request ends: rejected before it is queued, finished, cancelled, failed, or its model unloaded.
    """

    def __init__(self, slots: int, max_queue: int, name: str) -> None:
        self.slots = slots
        self.max_queue = max_queue
        self.name = name
        self.count = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def place(self) -> Iterator[Place]:
        """A place for one request; given back at once if the block raises (the request never queued)."""
        with self._lock:
            waiting = self.count - self.slots
            if waiting >= self.max_queue:
                raise QueueFull(f"queue full: {waiting} requests waiting for {self.name}; retry later")
            self.count += 1
        taken = Place(self)
        try:
            yield taken
        except BaseException:
            taken.release()
            raise

    def _give_back(self) -> None:
        with self._lock:
            self.count -= 1


class Place:
    def __init__(self, admission: Admission) -> None:
        self._admission: Admission | None = admission

    def release(self) -> None:
        admission, self._admission = self._admission, None
        if admission is not None:
            admission._give_back()


@dataclass(frozen=True)
class Job:
    """One generation request, already tokenized."""

    prompt: list[int]
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    max_tokens: int = 0  # 0: until end of generation or the context is full
    stop: tuple[str, ...] = ()
    stop_tokens: frozenset[int] = frozenset()  # in addition to the model's end-of-generation tokens
    ignore_eos: bool = False
    grammar: Grammar | None = None  # compiled for this request; the scheduler closes it when the job ends


@dataclass
class Chunk:
    text: str = ""
    logprobs: list = field(default_factory=list)  # sampling.Sampled, one per token with logprobs on
    finish_reason: str = ""  # "stop" | "length" on the last chunk
    stop_sequence: str = ""  # the stop string that ended it, with finish_reason "stop"
    prompt_tokens: int = 0  # on every chunk, so that the first one the consumer takes has them
    cached_tokens: int = 0  # of prompt_tokens, those the slot's KV cells already held
    completion_tokens: int = 0
    prompt_eval_ns: int = 0  # on the last chunk: from admission to a slot to the first token
    eval_ns: int = 0  # on the last chunk: from the first token to the last
    error: str = ""
    error_retryable: bool = True

    def merge(self, later: Chunk) -> None:
        self.text += later.text
        self.logprobs.extend(later.logprobs)
        self.finish_reason = later.finish_reason
        self.stop_sequence = later.stop_sequence
        self.prompt_tokens = later.prompt_tokens
        self.cached_tokens = later.cached_tokens
        self.completion_tokens = later.completion_tokens
        self.prompt_eval_ns = later.prompt_eval_ns
        self.eval_ns = later.eval_ns
        self.error = later.error
        self.error_retryable = later.error_retryable


class Stream:
    """The asyncio side of one sequence: iterate for chunks; `cancel()` when the client goes away.

    Chunks that piled up while the consumer was busy come merged into one.
    """

    def __init__(self, scheduler: Scheduler, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._scheduler = scheduler
        self._queue: asyncio.Queue[Chunk] = asyncio.Queue()
        self.cancelled = False
        self.done = False

    def _put(self, chunk: Chunk) -> None:
        self._queue.put_nowait(chunk)

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> Chunk:
        if self.done:
            raise StopAsyncIteration
        chunk = await self._queue.get()
        while not chunk.finish_reason and not chunk.error and not self._queue.empty():
            chunk.merge(self._queue.get_nowait())
        if chunk.error:
            self.done = True
            raise GenerationError(chunk.error, chunk.error_retryable)
        if chunk.finish_reason:
            self.done = True
        return chunk

    def cancel(self) -> None:
        if not self.done and not self.cancelled:
            self.cancelled = True
            self._scheduler._wake()


class Arrivals:
    """Counts requests on their way to a scheduler: their model name is being resolved, the one wait
    between a request's arrival and its submission when the model is loaded. An idle scheduler lets
    the first request of a burst wait for the rest, so that the burst is prefilled in one step."""

    def __init__(self) -> None:
        self.count = 0  # changed on the event loop, read by decode threads (an int read is atomic)
        self._listeners: set[Callable[[], None]] = set()

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1
            if not self.count:
                self._wake()

    def _wake(self) -> None:
        for wake in list(self._listeners):
            wake()

    def listen(self, wake: Callable[[], None]) -> None:
        """`wake` is called whenever no request is on its way any more."""
        self._listeners.add(wake)

    def ignore(self, wake: Callable[[], None]) -> None:
        self._listeners.discard(wake)


class _Sequence:
    __slots__ = (
        "stream", "job", "slot", "fed", "n_past", "last", "logits_row", "sampler", "text", "grammar",
        "generated", "submitted", "admitted", "first_token", "last_emit", "stop_tokens", "outputs", "cached",
        "place",
    )

    def __init__(self, stream: Stream, job: Job, stop_tokens: frozenset[int], vocab_size: int) -> None:
        self.stream = stream
        self.job = job
        self.place: Place | None = None
        self.slot = -1
        self.fed = 0          # prompt tokens placed in a batch
        self.n_past = 0       # tokens in the KV cache
        self.last = -1        # the token to feed next step
        self.logits_row = -1
        self.sampler = Sampler(job.sampling, vocab_size)
        self.text = TextStream(job.stop)
        self.grammar = job.grammar
        self.generated = 0
        self.submitted = time.perf_counter()
        self.admitted = 0.0  # when it took a slot
        self.first_token = 0.0  # when its first token was sampled
        self.last_emit = 0.0
        self.stop_tokens = stop_tokens
        self.outputs: list[int] = []  # generated tokens in the KV cache (the last sampled one is not)
        self.cached = 0  # prompt tokens the slot's KV cells held at admission

    def kv_tokens(self) -> list[int]:
        """What the sequence's KV cells hold: n_past tokens."""
        return self.job.prompt[: self.fed] + self.outputs


class Scheduler:
    """Owns the decode thread of one loaded model."""

    def __init__(
        self,
        model: LoadedModel,
        *,
        name: str,
        max_queue: int = 64,
        metrics: RunnerMetrics | None = None,
        arrivals: Arrivals | None = None,
        keep_prompts: bool = True,
        prefill_step_factor: float = 0.0,
    ) -> None:
        """`prefill_step_factor`: see StepBudget (0: a step may carry a whole batch of prompt tokens)."""
        self.model = model
        self.name = name
        self.max_queue = max_queue
        self.slots = model.facts.parallel
        self.context_size = model.facts.context_size
        self._metrics = metrics
        self._arrivals = arrivals
        self._gathering = False
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._admission = Admission(self.slots, max_queue, name)
        self._waiting: deque[_Sequence] = deque()
        self._active: list[_Sequence] = []
        self._slot_pool = Slots(self.slots, keep_prompts)
        self._step_budget = StepBudget(model.batch_capacity, prefill_step_factor)
        if arrivals is not None:
            arrivals.listen(self._wake_gathering)
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=f"decode:{name}", daemon=True)
        self._thread.start()

    # asyncio side -------------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Requests submitted and not finished (running or queued)."""
        return self._admission.count

    @property
    def busy_slots(self) -> int:
        return len(self._active)

    @property
    def queued(self) -> int:
        return max(0, self._admission.count - len(self._active))

    @property
    def kv_cache_usage(self) -> float:
        """Cells running sequences use over the unified cache's cells. The prompts free slots hold are
        not counted: they are a cache, freed the moment a running sequence needs room, and a picker
        reading this gauge must not take a replica with a warm cache for a full one. Read without a
        lock from the event loop (a gauge's snapshot, not bookkeeping)."""
        used = sum(seq.n_past for seq in list(self._active))
        return min(1.0, used / self.context_size) if self.context_size else 0.0

    def submit(self, job: Job) -> Stream:
        """Queues a job; raises QueueFull when `max_queue` requests already wait, ValueError when the
        job cannot run, GenerationError when the decode loop is gone. The scheduler owns the job's
        grammar from here on, even when it refuses the job."""
        try:
            if self._closing or not self._thread.is_alive():
                raise GenerationError(f"the engine of {self.name} is not running; retry to load it again")
            if not job.prompt:
                raise ValueError("the prompt is empty")
            if len(job.prompt) >= self.context_size:
                raise ValueError(prompt_too_long(str(len(job.prompt)), self.context_size, self.name))
            stream = Stream(self, asyncio.get_running_loop())
            stop_tokens = job.stop_tokens if job.ignore_eos else job.stop_tokens | self.model.facts.stop_tokens
            seq = _Sequence(stream, job, stop_tokens, self.model.facts.vocab_size)
            with self._admission.place() as place:
                seq.place = place
                self._commands.put(seq)
        except BaseException:
            if job.grammar is not None:
                job.grammar.close()
            raise
        return stream

    def wait_decode_loop(self) -> None:
        """Blocks until the decode thread ends: by close(), or by a failure of its own."""
        self._thread.join()

    def close(self) -> None:
        """Stops the thread (requests still running end with an error) and frees the model."""
        self._closing = True
        if self._arrivals is not None:
            self._arrivals.ignore(self._wake_gathering)
        self._wake()
        self._thread.join()
        self._fail_all("the model was unloaded")  # any submitted while the thread stopped
        self.model.close()

    def _wake(self) -> None:
        self._commands.put(None)

    def _wake_gathering(self) -> None:
        if self._gathering:
            self._wake()

    # decode thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._closing:
                idle = not self._active and not self._waiting
                self._take_commands(block=idle)
                if idle:
                    self._gather()
                if self._closing:
                    break
                self._drop_cancelled()
                self._admit()
                if self._active:
                    self._step()
        except Exception as exc:  # the engine broke: tell every caller rather than hang them
            log.exception("decode loop failed", extra={"fields": {"model": self.name}})
            self._fail_all(f"decode loop failed: {exc}")
            return
        self._fail_all("the model was unloaded")

    def _take_commands(self, block: bool) -> None:
        try:
            item = self._commands.get() if block else self._commands.get_nowait()
            while True:
                if item is not None:
                    self._waiting.append(item)
                item = self._commands.get_nowait()
        except queue.Empty:
            pass

    def _gather(self) -> None:
        """Holds the first request after idle while more are on their way (at most GATHER_SECONDS).

        A burst reaches the scheduler spread over some milliseconds (HTTP, gRPC, name resolution):
        traced at 8 requests, the first prompt was prefilled alone from 10 ms on while the other 7
        arrived until 27 ms and waited for that step. Gathered, the 8 start together at 13 ms. Once
        no request is on its way, the burst may still have some that the service has not picked up
        yet: it is complete when none arrives for GATHER_QUIET_SECONDS. A lone request (nothing on
        its way) starts at once."""
        if self._arrivals is None or not self._arrivals.count:
            return
        deadline = time.perf_counter() + GATHER_SECONDS
        self._gathering = True
        try:
            while len(self._waiting) < self.slots and not self._closing:
                left = deadline - time.perf_counter()
                if left <= 0:
                    return
                wait = left if self._arrivals.count else min(left, GATHER_QUIET_SECONDS)
                try:
                    item = self._commands.get(timeout=wait)
                except queue.Empty:
                    return
                if item is not None:
                    self._waiting.append(item)
        finally:
            self._gathering = False

    def _drop_cancelled(self) -> None:
        for seq in [s for s in self._active if s.stream.cancelled]:
            self._release(seq)
        if any(s.stream.cancelled for s in self._waiting):
            for seq in [s for s in self._waiting if s.stream.cancelled]:
                self._waiting.remove(seq)
                self._finished(seq)

    def _admit(self) -> None:
        while self._waiting and self._slot_pool:
            seq = self._waiting.popleft()
            seq.admitted = time.perf_counter()
            self._assign_slot(seq)
            self._active.append(seq)
            if self._metrics is not None:
                self._metrics.prompt_tokens.add(len(seq.job.prompt), {"model": self.name})
                self._metrics.cached_prompt_tokens.add(seq.cached, {"model": self.name})

    def _assign_slot(self, seq: _Sequence) -> None:
        """A free slot for the sequence; the start of its prompt found in a free slot's KV cells counts
        as prefilled."""
        assigned = self._slot_pool.take(seq.job.prompt)
        seq.slot, reuse = assigned.slot, assigned.reuse
        if assigned.source == seq.slot:
            if not self.model.keep_prefix(seq.slot, reuse):
                self.model.clear_sequence(seq.slot)
                reuse = 0
        else:
            if assigned.held:
                self.model.clear_sequence(seq.slot)
            if assigned.source is not None and not self.model.share_prefix(assigned.source, seq.slot, reuse):
                reuse = 0
        seq.fed = seq.n_past = seq.cached = reuse

    def _step(self) -> None:
        model = self.model
        model.batch_clear()
        planned: list[tuple[_Sequence, int]] = []  # (sequence, tokens it adds to the KV cache)
        for seq in self._active:
            if seq.fed == len(seq.job.prompt):
                seq.logits_row = model.batch_add(seq.last, seq.n_past, seq.slot, True)
                planned.append((seq, 1))
        decoding = len(planned)
        budget = prompt_budget = self._step_budget.prompt_tokens(decoding)
        for seq in self._active:
            if budget <= 0:
                break
            prompt = seq.job.prompt
            if seq.fed < len(prompt):
                chunk = prompt[seq.fed : seq.fed + budget]
                completes = seq.fed + len(chunk) == len(prompt)
                seq.logits_row = model.batch_add_many(chunk, seq.fed, seq.slot, completes)
                planned.append((seq, len(chunk)))
                budget -= len(chunk)
        started = time.perf_counter()
        rc = model.decode()
        if rc == 0:
            self._step_budget.observe(decoding, prompt_budget - budget, time.perf_counter() - started)
        if rc == 1:  # no room left in the unified KV cache: free a held slot, else end the longest sequence
            held = self._slot_pool.evict()
            if held is not None:
                model.clear_sequence(held)
            else:
                victim = max(self._active, key=lambda s: s.n_past + (len(s.job.prompt) - s.fed))
                self._deliver([(victim.stream, self._final(victim, "length", victim.text.flush(), keep=False))])
            return
        if rc != 0:
            raise GenerationError(f"llama_decode returned {rc}")
        out: list[tuple[Stream, Chunk]] = []
        now = time.perf_counter()
        for seq, added in planned:
            if seq.fed < len(seq.job.prompt):
                seq.fed += added
                seq.n_past += added
                if seq.fed < len(seq.job.prompt):
                    continue
            else:
                seq.n_past += added
                seq.outputs.append(seq.last)
            try:
                chunk = self._next_token(seq, now)
            except Exception as exc:  # this sequence's sampling broke: fail it alone, the others go on
                log.exception("sampling failed", extra={"fields": {"model": self.name}})
                if seq in self._active:
                    self._release(seq, keep=False)
                chunk = Chunk(error=f"sampling failed: {exc}", error_retryable=False)
            if chunk is not None:
                out.append((seq.stream, chunk))
        if out:
            self._deliver(out)

    def _next_token(self, seq: _Sequence, now: float) -> Chunk | None:
        row = self.model.logits(seq.logits_row)
        seq.sampler.prepare(row)
        sampled = self._sample(seq, row)
        token = sampled.token
        if not row[token] > -math.inf:  # -inf or NaN
            # Nothing is legal (a finished JSON value with end of generation banned): the answer is
            # complete. Feeding the grammar an illegal token would abort the process.
            return self._final(seq, "stop", seq.text.flush())
        seq.generated += 1
        if seq.generated == 1:
            seq.first_token = now
        self._observe_timing(seq, now)
        if token in seq.stop_tokens:
            return self._final(seq, "stop", seq.text.flush())
        seq.sampler.accept(token)
        if seq.grammar is not None:
            seq.grammar.accept(token)
        seq.last = token
        text = seq.text.push(self.model.piece(token))
        logprobs = [sampled] if seq.job.sampling.logprobs >= 0 else []
        if seq.text.stopped:
            return self._final(seq, "stop", text, logprobs)
        if seq.generated >= seq.job.max_tokens > 0 or seq.n_past + 1 >= self.context_size:
            return self._final(seq, "length", text + seq.text.flush(), logprobs)
        if not text and not logprobs:
            return None
        return Chunk(text=text, logprobs=logprobs, prompt_tokens=len(seq.job.prompt), cached_tokens=seq.cached)

    @staticmethod
    def _sample(seq: _Sequence, row) -> Sampled:
        """Samples from the row the penalties and biases prepared, under the grammar's mask: what is
        sampled is always legal. As llama.cpp's own sampler does, the pick is checked against the
        grammar first (one token, where the mask is the whole vocabulary: 262k tokens for Gemma) and
        the row masked only when the pick is illegal. For greedy sampling that is the same choice; a
        stochastic pick differs from sampling the masked row only in where top-k/top-p cut, as in
        llama.cpp. Logprobs need the masked row."""
        grammar = seq.grammar
        if grammar is None:
            return seq.sampler.sample(row)
        if seq.job.sampling.logprobs < 0:
            sampled = seq.sampler.sample(row)
            if row[sampled.token] > -math.inf and grammar.allows(sampled.token):
                return sampled
        grammar.apply(row)
        return seq.sampler.sample(row)

    def _observe_timing(self, seq: _Sequence, now: float) -> None:
        if self._metrics is None:
            return
        if seq.generated == 1:
            self._metrics.time_to_first_token.record(now - seq.submitted, {"model": self.name})
        else:
            self._metrics.inter_token_latency.record(now - seq.last_emit, {"model": self.name})
        self._metrics.output_tokens.add(1, {"model": self.name})
        seq.last_emit = now

    def _final(
        self, seq: _Sequence, reason: str, text: str, logprobs: list | None = None, keep: bool = True
    ) -> Chunk:
        """The last chunk, with the counts and the engine's own timings (a sequence ended before its
        first token, by a full KV cache, spent its whole time in prefill)."""
        self._release(seq, keep)
        end = time.perf_counter()
        first = seq.first_token or end
        return Chunk(
            text=text,
            logprobs=logprobs or [],
            finish_reason=reason,
            stop_sequence=seq.text.stop_sequence,
            prompt_tokens=len(seq.job.prompt),
            cached_tokens=seq.cached,
            completion_tokens=seq.generated,
            prompt_eval_ns=round((first - seq.admitted) * 1e9),
            eval_ns=round((end - first) * 1e9),
        )

    def _release(self, seq: _Sequence, keep: bool = True) -> None:
        """Takes a sequence out of the batch and frees its slot; its KV cells stay for a later prompt
        that starts with the same tokens, unless `keep` is False (or the slots keep none)."""
        self._active.remove(seq)
        if not self._slot_pool.release(seq.slot, seq.kv_tokens() if keep else None):
            self.model.clear_sequence(seq.slot)
        self._finished(seq)

    @staticmethod
    def _finished(seq: _Sequence) -> None:
        """Every way out of the scheduler ends here: the place and the grammar are given back."""
        if seq.grammar is not None:
            seq.grammar.close()
            seq.grammar = None
        if seq.place is not None:
            seq.place.release()

    def _fail_all(self, message: str) -> None:
        out = []
        for seq in list(self._active):
            self._release(seq)
            out.append((seq.stream, Chunk(error=message)))
        while self._waiting:
            seq = self._waiting.popleft()
            self._finished(seq)
            out.append((seq.stream, Chunk(error=message)))
        self._take_commands(block=False)
        while self._waiting:
            seq = self._waiting.popleft()
            self._finished(seq)
            out.append((seq.stream, Chunk(error=message)))
        if out:
            self._deliver(out)

    @staticmethod
    def _deliver(items: list[tuple[Stream, Chunk]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Stream, Chunk]]] = {}
        for stream, chunk in items:
            by_loop.setdefault(stream.loop, []).append((stream, chunk))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, batch)
            except RuntimeError:  # the loop closed: nobody is listening any more
                pass


def _put_all(items: list[tuple[Stream, Chunk]]) -> None:
    for stream, chunk in items:
        stream._put(chunk)

