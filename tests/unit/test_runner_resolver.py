"""StoreResolver shares one in-flight ResolveModel call among the requests for the same name."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from modelrunner.common.errors import ServiceError
from modelrunner.runner.resolver import StoreResolver
from modelrunner.v1 import store_pb2


class SlowStore:
    """Stands in for the Store's stub: counts calls, answers after `release` is set."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = asyncio.Event()
        self.fail = False

    async def ResolveModel(self, request, timeout=None):
        self.calls.append(request.name)
        await self.release.wait()
        if self.fail:
            raise grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       details=f"model {request.name} not found")
        return store_pb2.ResolvedModel(reference=f"docker.io/ai/{request.name}:latest", id="sha256:abc",
                                       gguf_paths=["/models/x.gguf"])


@pytest.fixture
async def resolver():
    r = StoreResolver("127.0.0.1:1")
    r._stub = SlowStore()
    yield r
    await r.close()


async def test_concurrent_requests_for_one_name_share_one_call(resolver):
    waiters = [asyncio.create_task(resolver.resolve("gemma3")) for _ in range(5)]
    other = asyncio.create_task(resolver.resolve("smollm2"))
    await asyncio.sleep(0.01)
    waiters[0].cancel()  # one client hangs up: the others still get their answer
    resolver._stub.release.set()
    results = await asyncio.gather(*waiters[1:], other)
    assert sorted(resolver._stub.calls) == ["gemma3", "smollm2"]
    assert {r.reference for r in results[:4]} == {"docker.io/ai/gemma3:latest"}
    assert results[4].reference == "docker.io/ai/smollm2:latest"
    await resolver.resolve("gemma3")  # the next request asks the Store again: nothing is cached
    assert resolver._stub.calls.count("gemma3") == 2


async def test_a_failed_call_fails_every_request_that_shared_it(resolver):
    resolver._stub.fail = True
    waiters = [asyncio.create_task(resolver.resolve("missing")) for _ in range(3)]
    await asyncio.sleep(0.01)
    resolver._stub.release.set()
    for outcome in await asyncio.gather(*waiters, return_exceptions=True):
        assert isinstance(outcome, ServiceError) and outcome.code == grpc.StatusCode.NOT_FOUND
    assert resolver._stub.calls == ["missing"]
