"""Turns ServiceError (and InvalidReference) raised by a servicer into the call's gRPC status, so
servicers raise errors instead of threading `context.abort` through every helper."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import grpc

from modelrunner.common.errors import ServiceError
from modelrunner.common.names import InvalidReference

log = logging.getLogger(__name__)


async def _abort_for(exc: Exception, context: grpc.aio.ServicerContext) -> None:
    if isinstance(exc, ServiceError):
        await context.abort(exc.code, exc.message)
    if isinstance(exc, InvalidReference):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    raise exc


def _wrap_unary(behavior: Callable) -> Callable:
    async def wrapper(request_or_iterator, context):
        try:
            return await behavior(request_or_iterator, context)
        except (ServiceError, InvalidReference) as exc:
            await _abort_for(exc, context)

    return wrapper


def _wrap_stream(behavior: Callable) -> Callable:
    async def wrapper(request_or_iterator, context):
        try:
            async for item in behavior(request_or_iterator, context):
                yield item
        except (ServiceError, InvalidReference) as exc:
            await _abort_for(exc, context)

    return wrapper


class ServiceErrorInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if handler.unary_unary:
            return handler._replace(unary_unary=_wrap_unary(handler.unary_unary))
        if handler.stream_unary:
            return handler._replace(stream_unary=_wrap_unary(handler.stream_unary))
        if handler.unary_stream:
            return handler._replace(unary_stream=_wrap_stream(handler.unary_stream))
        if handler.stream_stream:
            return handler._replace(stream_stream=_wrap_stream(handler.stream_stream))
        return handler
