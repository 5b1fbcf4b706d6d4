"""Health probes the launcher and `modelrunner status` use: grpc.health.v1 and the gateway's /healthz."""

from __future__ import annotations

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelrunner.common.channels import open_sync_channel


def grpc_health(addr: str, timeout: float = 1.0) -> str:
    """The overall status a service reports ("SERVING", "NOT_SERVING", ...) or "UNREACHABLE"."""
    with open_sync_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else None
            return "UNREACHABLE" if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) else str(code)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def http_health(url: str, timeout: float = 1.0) -> bool:
    """True when GET {url}/healthz answers 200."""
    try:
        return httpx.get(f"{url}/healthz", timeout=timeout, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False
