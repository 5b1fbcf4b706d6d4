"""The Runner service over engine processes: the lifecycle RPCs are served here, every per-model RPC
is forwarded to its model's engine (engine_client.py).

A per-model RPC is any Runner RPC whose request names a `model`, except the lifecycle ones: Generate,
Embed, Rerank, Tokenize and whatever is added later go to the engine without a change here. Requests
and responses cross as raw bytes: the request is parsed once for its model name, the responses (one
per token chunk) are not parsed at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor

from modelrunner.common.errors import invalid
from modelrunner.runner.engine_pipe import SERVICE, per_model_methods
from modelrunner.runner.manager import ModelManager
from modelrunner.runner.service import RunnerService
from modelrunner.runner.validation import check_context_size
from modelrunner.v1 import runner_pb2, runner_pb2_grpc


class SupervisedRunnerService(RunnerService):
    """RunnerService's lifecycle RPCs, with each engine's load asked for before it is listed."""

    async def ListRunning(self, request, context) -> runner_pb2.ListRunningResponse:
        await self.manager.refresh()
        return await super().ListRunning(request, context)


class _Handlers:
    """Stands in for a server to catch the generated code's method handlers."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, _handlers) -> None:
        pass

    def add_registered_method_handlers(self, _service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.handlers = dict(handlers)


def add_runner_to_server(manager: ModelManager, server: grpc.aio.Server) -> None:
    caught = _Handlers()
    runner_pb2_grpc.add_RunnerServicer_to_server(SupervisedRunnerService(manager), caught)
    handlers = caught.handlers
    for method in per_model_methods():
        handlers[method.name] = _forwarder(manager, method)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
    server.add_registered_method_handlers(SERVICE.full_name, handlers)


def _forwarder(manager: ModelManager, method: MethodDescriptor) -> grpc.RpcMethodHandler:
    name = method.name
    parse = message_factory.GetMessageClass(method.input_type).FromString

    def target(request: bytes) -> tuple[str, str, int]:
        message = parse(request)
        if not message.model:
            raise invalid("model is required")
        context_size = getattr(message, "context_size", 0)
        check_context_size(context_size)
        return message.model, getattr(message, "keep_alive", ""), context_size

    if method.server_streaming:
        async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            model, keep_alive, context_size = target(request)
            async with manager.acquire(model, keep_alive, context_size) as entry:
                async for chunk in entry.engine.stream(name, request):
                    yield chunk

        return grpc.unary_stream_rpc_method_handler(stream)

    async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        model, keep_alive, context_size = target(request)
        async with manager.acquire(model, keep_alive, context_size) as entry:
            return await entry.engine.unary(name, request)

    return grpc.unary_unary_rpc_method_handler(unary)
