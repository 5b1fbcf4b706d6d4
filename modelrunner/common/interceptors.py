"""Turns ServiceError (and InvalidReference) raised by a servicer into the call's gRPC status, so
servicers raise errors instead of threading `context.abort` through every helper. A write that failed for
want of space anywhere (an OSError ENOSPC, EDQUOT or EFBIG) is RESOURCE_EXHAUSTED with reason disk_full,
not UNKNOWN with the exception's repr."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import grpc

from modelrunner.common.errors import REASON_KEY, ServiceError, disk_full, no_space
from modelrunner.common.names import InvalidReference

log = logging.getLogger(__name__)


async def _abort_for(exc: Exception, context: grpc.aio.ServicerContext) -> None:
    if no_space(exc):
        exc = disk_full(f"cannot write: {no_space(exc)} ({exc.strerror}); free space and try again")
    if isinstance(exc, ServiceError):
        await context.abort(exc.code, exc.message, ((REASON_KEY, exc.reason),) if exc.reason else ())
    if isinstance(exc, InvalidReference):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    raise exc


def _wrap_unary(behavior: Callable) -> Callable:
    async def wrapper(request_or_iterator, context):
        try:
            return await behavior(request_or_iterator, context)
        except (ServiceError, InvalidReference, OSError) as exc:
            await _abort_for(exc, context)

    return wrapper


def _wrap_stream(behavior: Callable) -> Callable:
    async def wrapper(request_or_iterator, context):
        try:
            async for item in behavior(request_or_iterator, context):
                yield item
        except (ServiceError, InvalidReference, OSError) as exc:
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
