"""Errors across services: gRPC status codes, and how the gateway shows them over HTTP."""

from __future__ import annotations

import errno

import grpc

# gRPC status -> (HTTP status, OpenAI error type).
HTTP_FOR_GRPC: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error"),
    grpc.StatusCode.FAILED_PRECONDITION: (409, "invalid_request_error"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "invalid_request_error"),
    grpc.StatusCode.ABORTED: (409, "invalid_request_error"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "authentication_error"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_error"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found_error"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    grpc.StatusCode.CANCELLED: (499, "cancelled"),
    grpc.StatusCode.UNAVAILABLE: (503, "service_unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout"),
    grpc.StatusCode.UNIMPLEMENTED: (501, "not_implemented"),
    grpc.StatusCode.DATA_LOSS: (502, "server_error"),
}


# Why a call failed where its code alone is ambiguous, sent as trailing metadata under REASON_KEY: a full
# disk is RESOURCE_EXHAUSTED as a full queue is, but no retry in a second helps it (507, not 429).
REASON_KEY = "modelrunner-reason"
DISK_FULL = "disk_full"
HTTP_FOR_REASON: dict[str, tuple[int, str]] = {DISK_FULL: (507, "server_error")}

# Initial metadata a service sends when it has decided a client-streaming call's answer before the stream
# ended (the Store: the blob existed, the disk filled). It reads on until the client half-closes, because
# grpc aio reports a write still in flight when the status arrives as INTERNAL, losing the status; a
# client that watches for this stops sending at once instead of streaming the rest to be thrown away.
ANSWERED = ("modelrunner-answered", "1")

# A write refused for want of space, in words a user can act on.
_NO_SPACE = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file would be larger than the filesystem, or the process's file size limit, allows",
}


def http_status(code: grpc.StatusCode, reason: str = "") -> tuple[int, str]:
    return HTTP_FOR_REASON.get(reason) or HTTP_FOR_GRPC.get(code, (500, "server_error"))


class ServiceError(Exception):
    """An error a servicer raises to end the call with a status and a message that says what to fix
    (`reason`, one of the REASON_KEY values, where the code alone is ambiguous)."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason


def not_found(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, message)


def invalid(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, message)


def no_space(exc: BaseException) -> str:
    """Why a write failed for want of space (ENOSPC, EDQUOT, EFBIG), or "" when it failed otherwise."""
    return _NO_SPACE.get(exc.errno, "") if isinstance(exc, OSError) else ""


def disk_full(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, DISK_FULL)
