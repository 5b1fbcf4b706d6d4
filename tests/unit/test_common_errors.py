"""Errors across services: a write that failed for want of space is RESOURCE_EXHAUSTED with reason
disk_full wherever it is raised, and that reason, not the code alone, makes it a 507."""

from __future__ import annotations

import errno

import grpc
import pytest

from modelrunner.common.errors import DISK_FULL, REASON_KEY, ServiceError, http_status, no_space
from modelrunner.common.interceptors import ServiceErrorInterceptor


class Aborted(Exception):
    pass


class Context:
    """What the interceptor calls of a servicer context: abort, which ends the call by raising."""

    async def abort(self, code: grpc.StatusCode, details: str, trailing_metadata: tuple = ()) -> None:
        raise Aborted(code, details, trailing_metadata)


async def call_through_interceptor(error: Exception) -> tuple:
    async def behavior(request, context):
        raise error

    async def continuation(details):
        return grpc.unary_unary_rpc_method_handler(behavior)

    handler = await ServiceErrorInterceptor().intercept_service(continuation, None)
    with pytest.raises(Aborted) as aborted:
        await handler.unary_unary(None, Context())
    return aborted.value.args


@pytest.mark.parametrize(("code", "words"), [
    (errno.ENOSPC, "the disk is full"),
    (errno.EDQUOT, "the disk quota is used up"),
    (errno.EFBIG, "file size limit"),
])
async def test_a_write_without_room_anywhere_is_resource_exhausted_disk_full(code: int, words: str):
    status, details, trailing = await call_through_interceptor(OSError(code, "the system's words"))
    assert status == grpc.StatusCode.RESOURCE_EXHAUSTED and trailing == ((REASON_KEY, DISK_FULL),)
    assert words in details and "the system's words" in details and "free space" in details


async def test_other_os_errors_stay_unexpected_and_a_reason_travels_only_when_set():
    with pytest.raises(PermissionError):
        await call_through_interceptor(PermissionError(errno.EACCES, "denied"))
    queue_full = ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full")
    assert await call_through_interceptor(queue_full) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", ())


def test_a_full_disk_is_507_and_a_full_queue_stays_429():
    assert http_status(grpc.StatusCode.RESOURCE_EXHAUSTED, DISK_FULL) == (507, "server_error")
    assert http_status(grpc.StatusCode.RESOURCE_EXHAUSTED) == (429, "rate_limit_error")
    assert no_space(OSError(errno.EIO, "I/O error")) == "" and no_space(ValueError()) == ""
