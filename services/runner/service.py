"""The Runner's gRPC servicer: requests to jobs, chunks to messages, errors to statuses.

The jobs around it have modules of their own: validation.py (every field, once), jobs.py (chat
rendering, tokens, sampling options), grammars.py (response formats), held_answer.py (tool calls),
logprobs.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import grpc

from modelrunner.common.errors import ServiceError, invalid
from modelrunner.common.names import parse_reference
from modelrunner.runner import rerank, token_count
from modelrunner.runner.backends.base import InputTooLong, LoadedModel
from modelrunner.runner.grammars import grammar_for
from modelrunner.runner.held_answer import AnswerRelay, tools_offered
from modelrunner.runner.jobs import CUT_SLACK, build_job, fewest_tokens, part_with_tokens
from modelrunner.runner.logprobs import logprobs_message
from modelrunner.runner.manager import Loaded, ModelManager
from modelrunner.runner.model_settings import ModelConfig
from modelrunner.runner.scheduler import GenerationError, QueueFull
from modelrunner.runner.validation import (
    check_context_size, check_embed, check_generate, check_load_options, check_model, field_error,
)
from modelrunner.v1 import runner_pb2, runner_pb2_grpc


def _embed_tokens(model: LoadedModel, index: int, text: str, truncate: bool) -> list[int]:
    """An embedding input's tokens; one whose bytes alone show it cannot fit the context is refused,
    or with `truncate` cut to its start, before it is tokenized whole."""
    context = model.facts.context_size
    least = fewest_tokens(model, text)
    if least > context:
        if not truncate:
            raise field_error(f"inputs[{index}]", f"has at least {least} tokens, past the context of {context} "
                                                  "tokens: shorten it, or send truncate")
        text = part_with_tokens(model, text, context + CUT_SLACK, end=False)
    return model.tokenize(text, add_special=True, parse_special=False)


class RunnerService(runner_pb2_grpc.RunnerServicer):
    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    async def Generate(
        self, request: runner_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[runner_pb2.GenerateChunk]:
        check_generate(request)
        async with self.manager.acquire(request.model, request.keep_alive, request.context_size) as entry:
            # Rendering and tokenizing a prompt of megabytes takes seconds: off the loop that streams
            # every other request's tokens.
            job = await asyncio.to_thread(build_job, request, entry)
            job = dataclasses.replace(job, grammar=await grammar_for(request.response_format, entry.model))
            try:
                stream = entry.scheduler.submit(job)
            except QueueFull as exc:
                raise ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from exc
            except ValueError as exc:
                raise invalid(str(exc)) from exc
            except GenerationError as exc:
                raise ServiceError(grpc.StatusCode.UNAVAILABLE, str(exc)) from exc
            try:
                # The client going away or the deadline passing cancels the call: free the slot at once.
                context.add_done_callback(lambda _ctx: stream.cancel())
                relay = AnswerRelay(hold=tools_offered(request))
                first = True
                async for chunk in stream:
                    msg = runner_pb2.GenerateChunk(text=relay.delta(chunk.text), finish_reason=chunk.finish_reason,
                                                   stop_sequence=chunk.stop_sequence)
                    if first:  # the prompt's counts too: Anthropic's message_start reports them
                        msg.model = entry.name
                        msg.usage.prompt_tokens = chunk.prompt_tokens
                        msg.usage.cached_prompt_tokens = chunk.cached_tokens
                        first = False
                    if chunk.logprobs:
                        msg.logprobs.extend(logprobs_message(entry.model, chunk.logprobs))
                    if chunk.finish_reason:
                        msg.usage.prompt_tokens = chunk.prompt_tokens
                        msg.usage.completion_tokens = chunk.completion_tokens
                        msg.usage.cached_prompt_tokens = chunk.cached_tokens
                        msg.usage.prompt_eval_ns = chunk.prompt_eval_ns
                        msg.usage.eval_ns = chunk.eval_ns
                        relay.finish(msg)
                    if msg.text or msg.finish_reason or msg.model or msg.logprobs:
                        yield msg
            except GenerationError as exc:
                code = grpc.StatusCode.UNAVAILABLE if exc.retryable else grpc.StatusCode.INTERNAL
                raise ServiceError(code, f"generation failed: {exc}") from exc
            finally:
                stream.cancel()

    async def Embed(self, request: runner_pb2.EmbedRequest, context) -> runner_pb2.EmbedResponse:
        check_embed(request)
        async with self.manager.acquire(request.model, request.keep_alive) as entry:
            model = entry.model
            tokens = await asyncio.to_thread(
                lambda: [_embed_tokens(model, i, t, request.truncate) for i, t in enumerate(request.inputs)]
            )
            for i, t in enumerate(tokens):
                if not t:
                    raise invalid(f"inputs[{i}]: has no tokens")
            try:
                vectors = await asyncio.to_thread(model.embed, tokens)
            except InputTooLong as exc:
                if not request.truncate:
                    raise field_error(f"inputs[{exc.index}]", f"{exc}: shorten it, or send truncate") from exc
                tokens = [t[: exc.n_ctx] for t in tokens]
                vectors = await asyncio.to_thread(model.embed, tokens)
            except ValueError as exc:
                raise invalid(f"inputs: {exc}") from exc
            except RuntimeError as exc:
                raise ServiceError(grpc.StatusCode.UNAVAILABLE, f"embedding failed: {exc}") from exc
            return runner_pb2.EmbedResponse(
                embeddings=[runner_pb2.Embedding(values=v.tolist()) for v in vectors],
                prompt_tokens=sum(len(t) for t in tokens),
                model=entry.name,
            )

    async def Rerank(self, request: runner_pb2.RerankRequest, context) -> runner_pb2.RerankResponse:
        return await rerank.rerank(self.manager, request)

    async def Tokenize(self, request: runner_pb2.TokenizeRequest, context) -> runner_pb2.TokenizeResponse:
        return await token_count.tokenize(self.manager, request)

    async def LoadModel(self, request: runner_pb2.LoadModelRequest, context) -> runner_pb2.RunnerInfo:
        check_model(request.model, request.keep_alive)
        check_context_size(request.context_size)
        entry = await self.manager.load(request.model, request.keep_alive, request.context_size)
        return self._info(entry)

    async def UnloadModels(self, request: runner_pb2.UnloadModelsRequest, context) -> runner_pb2.UnloadModelsResponse:
        if request.backend and request.backend != self.manager.backend.name:
            return runner_pb2.UnloadModelsResponse(unloaded_runners=0)
        if request.all or not request.models:
            names = None
        else:
            names = [str(parse_reference(m)) for m in request.models]
        return runner_pb2.UnloadModelsResponse(unloaded_runners=await self.manager.unload(names))

    async def ListRunning(self, request, context) -> runner_pb2.ListRunningResponse:
        return runner_pb2.ListRunningResponse(runners=[self._info(e) for e in self.manager.loaded()])

    def _info(self, entry: Loaded) -> runner_pb2.RunnerInfo:
        facts = entry.model.facts
        return runner_pb2.RunnerInfo(
            backend_name=self.manager.backend.name,
            model_name=entry.name,
            mode="completion",
            last_used=entry.last_used,
            in_use=entry.leases > 0,
            loading=self.manager.is_loading(entry.name),
            keep_alive=entry.keep_alive_text,
            model_id=entry.resolved.model_id,
            memory_bytes=float(entry.memory.total_bytes),
            slots=facts.parallel,
            slots_busy=entry.scheduler.busy_slots,
            queued=entry.scheduler.queued,
            expires_at=entry.expires_at() or 0.0,
            context_size=facts.context_size,
            gpu_layers=facts.gpu_layers,
        )

    async def Configure(self, request: runner_pb2.ModelSettings, context) -> runner_pb2.ModelSettings:
        check_model(request.model)
        reference = str(parse_reference(request.model))
        config = ModelConfig(
            context_size=request.context_size,
            runtime_flags=list(request.runtime_flags),
            keep_alive=request.keep_alive,
            parallel=request.parallel,
            flash_attention=request.flash_attention if request.HasField("flash_attention") else None,
            gpu_layers=request.gpu_layers if request.HasField("gpu_layers") else None,
        )
        try:
            check_load_options(config.load_options(self.manager.config.defaults))
            await asyncio.to_thread(self.manager.settings.put, reference, config)
        except ValueError as exc:
            raise invalid(str(exc)) from exc
        self.manager.mark_stale(reference)
        await self.manager.expire_idle()
        return self._settings(reference, config)

    async def ListConfigurations(self, request, context) -> runner_pb2.ListConfigurationsResponse:
        return runner_pb2.ListConfigurationsResponse(
            settings=[self._settings(name, c) for name, c in sorted(self.manager.settings.all().items())]
        )

    @staticmethod
    def _settings(reference: str, c: ModelConfig) -> runner_pb2.ModelSettings:
        msg = runner_pb2.ModelSettings(
            model=reference,
            context_size=c.context_size,
            runtime_flags=c.runtime_flags,
            keep_alive=c.keep_alive,
            parallel=c.parallel,
        )
        if c.flash_attention is not None:
            msg.flash_attention = c.flash_attention
        if c.gpu_layers is not None:
            msg.gpu_layers = c.gpu_layers
        return msg

    async def Status(self, request, context) -> runner_pb2.StatusResponse:
        backend = self.manager.backend
        gpu = await asyncio.to_thread(backend.gpu_available)
        return runner_pb2.StatusResponse(
            backends=[runner_pb2.BackendStatus(name=backend.name, status="running", version=backend.version(), gpu=gpu)]
        )
