"""The Runner <-> engine call protocol (engine_pipe.py) over a real Unix socket, with handlers that
stand in for the servicer: ordering, errors, cancellation both ways, a lost connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelrunner.common.errors import ServiceError
from modelrunner.runner.engine_pipe import (
    DATA, END, MAX_PAYLOAD, CallContext, CallFailed, EngineConnection, _frame, _Framed, _HEADER, serve_calls,
)


class Recorder(_Framed):
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[tuple[int, int, bytes]] = []

    def frame_received(self, call: int, kind: int, payload: bytes) -> None:
        self.frames.append((call, kind, payload))


@given(st.lists(st.tuples(st.integers(0, 2**64 - 1), st.sampled_from([DATA, END]), st.binary(max_size=300)),
                max_size=20), st.lists(st.integers(1, 50), max_size=40))
def test_frames_survive_any_split_of_the_byte_stream(frames, cuts):
    data = b"".join(_frame(*f) for f in frames)
    recorder = Recorder()
    offset = 0
    for cut in cuts:
        recorder.data_received(data[offset:offset + cut])
        offset += cut
    recorder.data_received(data[offset:])
    assert recorder.frames == frames


class Engine:
    """Handlers and what they saw."""

    def __init__(self) -> None:
        self.arrivals: list[int] = []
        self.cancelled = asyncio.Event()
        self.done_callbacks = 0
        self.started = asyncio.Event()

    async def count(self, request: bytes, context: CallContext) -> AsyncIterator[bytes]:
        for i in range(int(request)):
            yield str(i).encode()

    async def fail(self, request: bytes, context: CallContext) -> AsyncIterator[bytes]:
        yield b"partial"
        raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "temperature: must be >= 0")

    async def crash(self, request: bytes, context: CallContext) -> AsyncIterator[bytes]:
        raise RuntimeError("boom")
        yield b""

    async def forever(self, request: bytes, context: CallContext) -> AsyncIterator[bytes]:
        context.add_done_callback(lambda _c: setattr(self, "done_callbacks", self.done_callbacks + 1))
        yield b"first"
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        yield b"never"

    async def echo(self, request: bytes, context: CallContext) -> AsyncIterator[bytes]:
        yield request[::-1]

    def handlers(self):
        return {"Count": self.count, "Fail": self.fail, "Crash": self.crash, "Forever": self.forever, "Echo": self.echo}


@pytest.fixture
async def pair(tmp_path):
    """Makes (server, connection, lost): an engine side serving `Engine`'s handlers and the Runner's side
    of it, both closed after the test; `lost` counts the connection's on_lost calls."""
    lost: list[None] = []
    made = []

    async def make(engine: Engine):
        server = await serve_calls(str(tmp_path / "sock"), engine.handlers(), engine.arrivals.append)
        connection = await EngineConnection.open(str(tmp_path / "sock"), lambda: lost.append(None))
        made.append((server, connection))
        return server, connection, lost

    yield make
    for server, connection in made:
        connection.close()
        server.close()


async def _forever_started(connection: EngineConnection) -> AsyncIterator[bytes]:
    """A call to the never-ending handler, past its first response."""
    calls = connection.call("Forever", b"", 0)
    assert await anext(calls) == b"first"
    return calls


async def _collect(connection: EngineConnection, method: str, request: bytes = b"") -> list[bytes]:
    return [item async for item in connection.call(method, request, 3)]


async def test_concurrent_calls_each_get_their_own_responses_in_order_then_the_end(pair):
    engine = Engine()
    server, connection, lost = await pair(engine)
    results = await asyncio.gather(*(_collect(connection, "Count", str(n).encode()) for n in (0, 5, 50)))
    assert results == [[], [str(i).encode() for i in range(5)], [str(i).encode() for i in range(50)]]
    assert engine.arrivals == [3, 3, 3]


async def test_a_request_and_an_answer_of_many_mib_cross_whole_beside_small_calls(pair):
    engine = Engine()
    server, connection, lost = await pair(engine)
    big = bytes(range(256)) * (80 * 1024)  # 20 MiB
    echoed, counted = await asyncio.gather(_collect(connection, "Echo", big), _collect(connection, "Count", b"3"))
    assert echoed == [big[::-1]] and counted == [b"0", b"1", b"2"]


async def test_an_engine_error_arrives_after_what_was_sent_with_its_code_and_message(pair):
    engine = Engine()
    server, connection, lost = await pair(engine)
    got = []
    with pytest.raises(CallFailed) as failed:
        async for item in connection.call("Fail", b"", 0):
            got.append(item)
    assert got == [b"partial"]
    assert failed.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert failed.value.details == "temperature: must be >= 0"
    with pytest.raises(CallFailed) as crashed:
        await _collect(connection, "Crash")
    assert crashed.value.code is grpc.StatusCode.UNKNOWN and "boom" in crashed.value.details
    with pytest.raises(CallFailed) as unknown:
        await _collect(connection, "Nope")
    assert unknown.value.code is grpc.StatusCode.UNIMPLEMENTED
    assert await _collect(connection, "Count", b"2") == [b"0", b"1"]  # the connection still serves


async def test_leaving_a_call_early_cancels_it_in_the_engine(pair):
    engine = Engine()
    server, connection, lost = await pair(engine)
    calls = await _forever_started(connection)
    await engine.started.wait()
    await calls.aclose()
    await asyncio.wait_for(engine.cancelled.wait(), 10)
    await asyncio.sleep(0)
    assert engine.done_callbacks == 1


async def test_a_lost_connection_ends_every_open_call_as_unavailable_and_refuses_new_ones(pair):
    engine = Engine()
    server, connection, lost = await pair(engine)
    calls = await _forever_started(connection)
    server.close()
    connection.transport.abort()  # what the engine's death looks like from here
    with pytest.raises(CallFailed) as failed:
        await anext(calls)
    assert failed.value.code is grpc.StatusCode.UNAVAILABLE
    with pytest.raises(CallFailed):
        await _collect(connection, "Count", b"1")
    assert len(lost) == 1


async def test_closing_the_connection_on_purpose_is_not_a_loss(pair):
    server, connection, lost = await pair(Engine())
    connection.close()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert lost == []


async def test_every_call_gets_an_end_however_its_handler_fails(pair):
    """A handler's own cancellation, a failing done callback, details that are not valid UTF-8."""
    engine = Engine()

    async def cancels_itself(request: bytes, context: CallContext) -> AsyncIterator[bytes]:
        raise asyncio.CancelledError
        yield b""

    async def bad_callback(request: bytes, context: CallContext) -> AsyncIterator[bytes]:
        context.add_done_callback(lambda _c: 1 / 0)
        yield b"ok"

    async def surrogate(request: bytes, context: CallContext) -> AsyncIterator[bytes]:
        raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "stop: \ud800 is not text")
        yield b""

    handlers = {**engine.handlers(), "CancelsItself": cancels_itself, "BadCallback": bad_callback,
                "Surrogate": surrogate}
    engine.handlers = lambda: handlers
    server, connection, _ = await pair(engine)
    with pytest.raises(CallFailed) as cancelled:
        await _collect(connection, "CancelsItself")
    assert cancelled.value.code is grpc.StatusCode.UNKNOWN
    assert await _collect(connection, "BadCallback") == [b"ok"]
    with pytest.raises(CallFailed) as odd:
        await _collect(connection, "Surrogate")
    assert odd.value.code is grpc.StatusCode.INVALID_ARGUMENT and odd.value.details.startswith("stop: ")


async def test_an_oversized_frame_ends_the_connection_as_lost(pair):
    server, connection, lost = await pair(Engine())
    calls = await _forever_started(connection)
    connection.data_received(_HEADER.pack(1, DATA, MAX_PAYLOAD + 1))
    with pytest.raises(CallFailed) as failed:
        await anext(calls)
    assert failed.value.code is grpc.StatusCode.UNAVAILABLE and len(lost) == 1
