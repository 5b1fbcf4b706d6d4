"""The Distribution's gRPC servicer: requests in, progress streams out; the work is in pull/push."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from modelrunner.distribution.context import Context
from modelrunner.distribution.progress import TransferProgress, sample
from modelrunner.distribution.pull import pull
from modelrunner.distribution.push import push
from modelrunner.distribution.remote import remote_model
from modelrunner.v1 import distribution_pb2, distribution_pb2_grpc, types_pb2

SERVICE_NAME = distribution_pb2.DESCRIPTOR.services_by_name["Distribution"].full_name


async def _stream(
    mode: str, verb: str, done: str, work: Callable[[TransferProgress], Awaitable[str]]
) -> AsyncIterator[types_pb2.Progress]:
    """Progress while `work` runs, then "success" with its model id; its error ends the stream."""
    progress = TransferProgress(mode)
    stop = asyncio.Event()
    task = asyncio.create_task(work(progress))
    task.add_done_callback(lambda _: stop.set())
    try:
        async for message in sample(progress, verb, stop):
            yield message
        model_id = await task
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    yield types_pb2.Progress(
        type="success", message=done, mode=mode, total=progress.total, current=progress.current,
        rate=progress.message(None, "").rate, model_id=model_id,
    )


class DistributionServicer(distribution_pb2_grpc.DistributionServicer):
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def PullModel(self, request, context) -> AsyncIterator[types_pb2.Progress]:
        name = request.reference
        return _stream("pull", "Downloaded", f"Model {name} pulled successfully",
                       lambda progress: pull(self.ctx, name, request.insecure, progress))

    def PushModel(self, request, context) -> AsyncIterator[types_pb2.Progress]:
        name = request.name
        return _stream("push", "Uploaded", f"Model {name} pushed successfully",
                       lambda progress: push(self.ctx, name, request.insecure, progress))

    async def GetRemoteModel(self, request, context) -> types_pb2.Model:
        return await remote_model(self.ctx, request.reference, request.insecure)


def register(servicer: DistributionServicer) -> Callable[[grpc.aio.Server], None]:
    def add(server: grpc.aio.Server) -> None:
        distribution_pb2_grpc.add_DistributionServicer_to_server(servicer, server)

    return add
