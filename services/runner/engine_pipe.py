"""The per-model calls between the Runner and an engine process, over one Unix socket connection.

The Runner forwards every per-model RPC (Generate, Embed, Rerank, Tokenize) to its model's engine.
As gRPC calls, each token chunk cost a message on each side of the hop (a completion, a wake of
gRPC's poller thread and of the event loop), about 0.4 ms of CPU per token on the two cores that
llama.cpp decodes on. Here all calls share one connection and the engine writes each decode step's
chunks, for all of its streams, in one write: frames of (call id, kind, payload), in order, so a
call's END always comes after its last DATA.

    Runner -> engine:  OPEN(method, arriving count, request bytes), CANCEL
    engine -> Runner:  DATA(one response message's bytes), END(status code, details)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
from collections import deque
from collections.abc import AsyncIterator, Callable

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor

from modelrunner.common.errors import ServiceError
from modelrunner.common.names import InvalidReference
from modelrunner.common.server import MAX_MESSAGE_BYTES
from modelrunner.v1 import runner_pb2

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<QBI")  # call id, kind, payload length
_OPEN_HEADER = struct.Struct("<HI")  # method name length, arriving count
_END_HEADER = struct.Struct("<H")  # status code
OPEN, CANCEL, DATA, END = 1, 2, 3, 4
_CODES = {code.value[0]: code for code in grpc.StatusCode}
# A frame carries one request or response message: gRPC's limit on the hops either side of this one.
MAX_PAYLOAD = MAX_MESSAGE_BYTES + 1024
SERVICE = runner_pb2.DESCRIPTOR.services_by_name["Runner"]
LIFECYCLE = frozenset({"LoadModel", "UnloadModels", "ListRunning", "Configure", "ListConfigurations", "Status"})


def per_model_methods() -> list[MethodDescriptor]:
    """The Runner's RPCs that one model's engine serves: those whose request names a model, but
    the lifecycle ones."""
    return [m for m in SERVICE.methods if m.name not in LIFECYCLE and "model" in m.input_type.fields_by_name]


def _frame(call: int, kind: int, payload: bytes = b"") -> bytes:
    return _HEADER.pack(call, kind, len(payload)) + payload


class _Framed(asyncio.Protocol):
    """Splits the byte stream into frames; writes are gathered into one per event-loop turn."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._inbound = bytearray()
        self._outbound: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self._inbound
        buffer += data
        offset = 0
        while len(buffer) - offset >= _HEADER.size:
            call, kind, length = _HEADER.unpack_from(buffer, offset)
            if length > MAX_PAYLOAD:
                log.error("a frame of %d bytes on the engine connection: closing it", length)
                buffer.clear()
                self.transport.close()
                return
            end = offset + _HEADER.size + length
            if len(buffer) < end:
                break
            self.frame_received(call, kind, bytes(buffer[offset + _HEADER.size:end]))
            offset = end
        del buffer[:offset]

    def frame_received(self, call: int, kind: int, payload: bytes) -> None:
        raise NotImplementedError

    def send(self, frame: bytes) -> None:
        """Queues a frame; every frame queued in this turn of the loop goes out in one write."""
        if not self._outbound:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbound.append(frame)

    def _flush(self) -> None:
        frames, self._outbound = self._outbound, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(frames))


# engine side --------------------------------------------------------------------------------------
class CallContext:
    """The part of grpc.aio.ServicerContext the Runner's servicer uses."""

    def __init__(self) -> None:
        self._callbacks: list[Callable] = []

    def add_done_callback(self, callback: Callable) -> None:
        self._callbacks.append(callback)

    def done(self) -> None:
        for callback in self._callbacks:
            callback(self)


Handler = Callable[[bytes, "CallContext"], AsyncIterator[bytes]]


def servicer_handlers(servicer: object, methods: list[MethodDescriptor]) -> dict[str, Handler]:
    """Each of the servicer's methods as a Handler: the request parsed, each response serialized."""

    def handler(method: MethodDescriptor) -> Handler:
        parse = message_factory.GetMessageClass(method.input_type).FromString
        behavior = getattr(servicer, method.name)
        if method.server_streaming:
            async def stream(request: bytes, context: CallContext) -> AsyncIterator[bytes]:
                async for message in behavior(parse(request), context):
                    yield message.SerializeToString()

            return stream

        async def unary(request: bytes, context: CallContext) -> AsyncIterator[bytes]:
            yield (await behavior(parse(request), context)).SerializeToString()

        return unary

    return {method.name: handler(method) for method in methods}


class EngineCalls(_Framed):
    """One Runner connection to this engine: runs each OPENed call, streams its responses back."""

    def __init__(self, handlers: dict[str, Handler], report_arrivals: Callable[[int], None]) -> None:
        super().__init__()
        self._handlers = handlers
        self._report_arrivals = report_arrivals
        self._calls: dict[int, asyncio.Task] = {}
        self._cancelled: set[int] = set()

    def frame_received(self, call: int, kind: int, payload: bytes) -> None:
        if kind == OPEN:
            name_length, arriving = _OPEN_HEADER.unpack_from(payload)
            name = payload[_OPEN_HEADER.size:_OPEN_HEADER.size + name_length].decode()
            self._report_arrivals(arriving)
            request = payload[_OPEN_HEADER.size + name_length:]
            task = asyncio.get_running_loop().create_task(self._run(call, name, request))
            self._calls[call] = task
            task.add_done_callback(lambda _t: self._calls.pop(call, None))
        elif kind == CANCEL and (task := self._calls.get(call)) is not None:
            self._cancelled.add(call)
            task.cancel()

    def connection_lost(self, exc: Exception | None) -> None:
        for call, task in list(self._calls.items()):
            self._cancelled.add(call)
            task.cancel()

    async def _run(self, call: int, name: str, request: bytes) -> None:
        """Runs one call; whatever happens but a cancel from the Runner, its END is sent."""
        context = CallContext()
        code, details = grpc.StatusCode.OK, ""
        try:
            handler = self._handlers.get(name)
            if handler is None:
                raise ServiceError(grpc.StatusCode.UNIMPLEMENTED, f"the engine has no method {name}")
            async for response in handler(request, context):
                self.send(_frame(call, DATA, response))
        except asyncio.CancelledError:
            if call in self._cancelled:
                self._cancelled.discard(call)
                return  # the Runner cancelled the call (or went away): nobody waits for its END
            code, details = grpc.StatusCode.UNKNOWN, f"{name} was cancelled inside the engine"
        except ServiceError as exc:
            code, details = exc.code, exc.message
        except InvalidReference as exc:
            code, details = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        except Exception as exc:
            log.exception("engine call failed", extra={"fields": {"method": name}})
            code, details = grpc.StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}"
        finally:
            try:
                context.done()
            except Exception:
                log.exception("an engine call's done callback failed", extra={"fields": {"method": name}})
        self.send(_frame(call, END, _END_HEADER.pack(code.value[0]) + details.encode(errors="replace")))


async def serve_calls(
    path: str, handlers: dict[str, Handler], report_arrivals: Callable[[int], None]
) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_unix_server(lambda: EngineCalls(handlers, report_arrivals), path)


# Runner side --------------------------------------------------------------------------------------
class CallFailed(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _Inbox:
    """One call's responses as they arrive, then how it ended."""

    __slots__ = ("items", "ended", "waiter")

    def __init__(self) -> None:
        self.items: deque[bytes] = deque()
        self.ended: tuple[grpc.StatusCode, str] | None = None
        self.waiter: asyncio.Future | None = None

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def put(self, item: bytes) -> None:
        self.items.append(item)
        self._wake()

    def end(self, code: grpc.StatusCode, details: str) -> None:
        if self.ended is None:
            self.ended = (code, details)
        self._wake()

    async def next(self) -> bytes | None:
        """The next response, or None once the call ended well; raises CallFailed when it did not."""
        while not self.items:
            if self.ended is not None:
                code, details = self.ended
                if code is grpc.StatusCode.OK:
                    return None
                raise CallFailed(code, details)
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return self.items.popleft()


class EngineConnection(_Framed):
    """The Runner's connection to one engine process."""

    def __init__(self, on_lost: Callable[[], None]) -> None:
        super().__init__()
        self._ids = itertools.count(1)
        self._inboxes: dict[int, _Inbox] = {}
        self._lost = False
        self._on_lost = on_lost

    @classmethod
    async def open(cls, path: str, on_lost: Callable[[], None]) -> EngineConnection:
        """`on_lost` runs when the connection ends by any cause but close()."""
        loop = asyncio.get_running_loop()
        _transport, connection = await loop.create_unix_connection(lambda: cls(on_lost), path)
        return connection

    def close(self) -> None:
        self._on_lost = lambda: None
        if self.transport is not None:
            self.transport.close()

    def frame_received(self, call: int, kind: int, payload: bytes) -> None:
        inbox = self._inboxes.get(call)
        if inbox is None:  # a call cancelled here whose last frames were already on their way
            return
        if kind == DATA:
            inbox.put(payload)
        elif kind == END:
            (code,) = _END_HEADER.unpack_from(payload)
            inbox.end(_CODES.get(code, grpc.StatusCode.UNKNOWN), payload[_END_HEADER.size:].decode(errors="replace"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        for inbox in self._inboxes.values():
            inbox.end(grpc.StatusCode.UNAVAILABLE, "the connection to the engine was lost")
        self._on_lost()

    async def call(self, method: str, request: bytes, arriving: int) -> AsyncIterator[bytes]:
        """Runs one call on the engine and yields its response messages; CallFailed when it fails.
        Leaving early (the caller went away) cancels the call in the engine."""
        if self._lost:
            raise CallFailed(grpc.StatusCode.UNAVAILABLE, "the connection to the engine was lost")
        call = next(self._ids)
        inbox = self._inboxes[call] = _Inbox()
        try:
            name = method.encode()
            self.send(_frame(call, OPEN, _OPEN_HEADER.pack(len(name), arriving) + name + request))
            while (item := await inbox.next()) is not None:
                yield item
        finally:
            del self._inboxes[call]
            if inbox.ended is None and not self._lost:
                with contextlib.suppress(RuntimeError):  # the loop is closing: the engine goes with it
                    self.send(_frame(call, CANCEL))
