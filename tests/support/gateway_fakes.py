"""In-process fake Store, Distribution and Runner servicers for the gateway's unit tests: small,
scripted by model name, and recording what they were asked (and whether a call was cancelled)."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from modelrunner.v1 import (
    distribution_pb2_grpc,
    runner_pb2,
    runner_pb2_grpc,
    store_pb2,
    store_pb2_grpc,
    types_pb2,
)

TINY = "docker.io/ai/tiny:latest"
MODEL = types_pb2.Model(
    id="sha256:" + "a" * 64,
    tags=[TINY, "docker.io/ai/tiny:v1"],
    created=1700000000,
    size=524288,
    config=types_pb2.ModelConfig(format="gguf", quantization="F32", parameters="1.00 M", architecture="llama",
                                 size="524.29 kB", context_size=512),
)


class FakeStore(store_pb2_grpc.StoreServicer):
    async def ListModels(self, request, context):
        return store_pb2.ListModelsResponse(models=[MODEL])

    async def GetModel(self, request, context):
        if request.name in (TINY, "ai/tiny", MODEL.id):
            return MODEL
        await context.abort(grpc.StatusCode.NOT_FOUND, f"model {request.name} not found")

    async def DeleteModel(self, request, context):
        if request.name == "ai/multi" and not request.force:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "ai/multi has several tags; use force")
        return store_pb2.DeleteModelResponse(
            actions=[store_pb2.DeleteAction(untagged=TINY), store_pb2.DeleteAction(deleted=MODEL.id)]
        )

    async def TagModel(self, request, context):
        self.tagged = request
        return store_pb2.TagModelResponse(tag=f"docker.io/{request.repo}:{request.tag}", model=MODEL)

    async def PackageModel(self, request, context):
        self.packaged = request
        return MODEL

    async def DiskUsage(self, request, context):
        return store_pb2.DiskUsageResponse(models_disk_usage=524288, default_backend_disk_usage=0)


class FakeDistribution(distribution_pb2_grpc.DistributionServicer):
    async def PullModel(self, request, context):
        if request.reference == "ai/absent":
            await context.abort(grpc.StatusCode.NOT_FOUND, "ai/absent: not found in docker.io")
        for done in (0, 262144, 524288):
            yield types_pb2.Progress(type="progress", message=f"{done} bytes", total=524288, current=done, mode="pull",
                                     layer=types_pb2.LayerProgress(id="sha256:" + "b" * 64, size=524288, current=done))
        yield types_pb2.Progress(type="success", message="pulled", mode="pull", model_id=MODEL.id)

    async def GetRemoteModel(self, request, context):
        self.remote = request
        return MODEL


class FakeRunner(runner_pb2_grpc.RunnerServicer):
    def __init__(self) -> None:
        self.requests: list = []
        self.cancelled = asyncio.Event()
        self.slow_started = asyncio.Event()  # the slow model's call is in flight

    async def Generate(self, request, context):
        self.requests.append(request)
        model = request.model
        if model == "docker.io/ai/missing:latest":
            await context.abort(grpc.StatusCode.NOT_FOUND, f"model {model} not found")
        if model == "docker.io/ai/busy:latest":
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", trailing_metadata=(("retry-after", "7"),))
        if model == "docker.io/ai/slow:latest":
            yield runner_pb2.GenerateChunk(text="a", model=model)
            self.slow_started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:  # grpc.aio cancels the handler when the client cancels the call
                self.cancelled.set()
                raise
            return
        if model == "docker.io/ai/broken:latest":
            yield runner_pb2.GenerateChunk(text="a", model=model)
            await context.abort(grpc.StatusCode.INTERNAL, "the backend crashed")
        logprob = [runner_pb2.TokenLogprob(token="Hel", logprob=-0.5, top=[runner_pb2.TopLogprob(token="Hel", logprob=-0.5)])]
        yield runner_pb2.GenerateChunk(text="Hel", model=model, logprobs=logprob if request.logprobs else [],
                                       usage=runner_pb2.Usage(prompt_tokens=3))  # the first chunk counts the prompt
        yield runner_pb2.GenerateChunk(text="lo")
        final = runner_pb2.GenerateChunk(finish_reason="stop", usage=runner_pb2.Usage(
            prompt_tokens=3, completion_tokens=2, prompt_eval_ns=2_000_000, eval_ns=5_000_000))
        if model == "docker.io/ai/tools:latest":
            final.finish_reason = "tool_calls"
            final.tool_calls.append(runner_pb2.ToolCall(id="call_1", type="function", name="get_weather", arguments='{"city":"Paris"}'))
        yield final

    async def Embed(self, request, context):
        self.requests.append(request)
        return runner_pb2.EmbedResponse(
            embeddings=[runner_pb2.Embedding(values=[0.5, -1.0]) for _ in request.inputs],
            prompt_tokens=len(request.inputs), model=request.model,
        )

    async def ListRunning(self, request, context):
        return runner_pb2.ListRunningResponse(runners=[runner_pb2.RunnerInfo(
            backend_name="llama.cpp", model_name=TINY, mode="completion", last_used=1700000001, keep_alive="5m")])

    async def UnloadModels(self, request, context):
        return runner_pb2.UnloadModelsResponse(unloaded_runners=len(request.models) or int(request.all))

    async def Configure(self, request, context):
        self.configured = request
        return request

    async def ListConfigurations(self, request, context):
        return runner_pb2.ListConfigurationsResponse(settings=[runner_pb2.ModelSettings(model=TINY, context_size=2048)])

    async def Status(self, request, context):
        return runner_pb2.StatusResponse(backends=[runner_pb2.BackendStatus(name="llama.cpp", status="running")])


class Fakes:
    def __init__(self) -> None:
        self.store = FakeStore()
        self.distribution = FakeDistribution()
        self.runner = FakeRunner()
        self.health = health.aio.HealthServicer()


@asynccontextmanager
async def fake_services():
    """A grpc.aio server on a free port serving the three fakes and health; yields (address, fakes)."""
    fakes = Fakes()
    server = grpc.aio.server()
    store_pb2_grpc.add_StoreServicer_to_server(fakes.store, server)
    distribution_pb2_grpc.add_DistributionServicer_to_server(fakes.distribution, server)
    runner_pb2_grpc.add_RunnerServicer_to_server(fakes.runner, server)
    health_pb2_grpc.add_HealthServicer_to_server(fakes.health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await fakes.health.set("", health_pb2.HealthCheckResponse.SERVING)
    try:
        yield f"127.0.0.1:{port}", fakes
    finally:
        await server.stop(0)


@asynccontextmanager
async def gateway_client(options=None, *, address: str | None = None):
    """The gateway app over the fakes (or `address`, e.g. a port nothing listens on), with an httpx client."""
    import httpx

    from modelrunner.gateway.app import create_app
    from modelrunner.gateway.backends import Backends

    async with fake_services() as (fake_address, fakes):
        addr = address or fake_address
        backends = Backends.connect(addr, addr, addr)
        app = create_app(backends, options)
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                yield client, fakes
        finally:
            await backends.close()
