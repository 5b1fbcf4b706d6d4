"""The Runner's gRPC servicer: requests to jobs, chunks to messages, errors to statuses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from modelrunner.common.errors import ServiceError, invalid
from modelrunner.common.names import parse_reference
from modelrunner.runner.manager import Loaded, ModelManager
from modelrunner.runner.model_settings import ModelConfig
from modelrunner.runner.sampling import (
    DEFAULT_MIN_P,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    Sampled,
    SamplingOptions,
)
from modelrunner.runner.scheduler import GenerationError, Job, QueueFull
from modelrunner.runner.textstream import TextStream
from modelrunner.runner.tool_calls import parse_tool_calls
from modelrunner.v1 import runner_pb2, runner_pb2_grpc

MAX_TOP_LOGPROBS = 20
BASE_MODEL_CHAT_MAX_TOKENS = 256


def sampling_options(p: runner_pb2.SamplingParams, logprobs: int, banned: frozenset[int]) -> SamplingOptions:
    def opt(name: str, default):
        return getattr(p, name) if p.HasField(name) else default

    temperature = opt("temperature", DEFAULT_TEMPERATURE)
    if temperature < 0:
        raise invalid(f"temperature must be >= 0, not {temperature}")
    top_p = opt("top_p", DEFAULT_TOP_P)
    if not 0 < top_p <= 1:
        raise invalid(f"top_p must be in (0, 1], not {top_p}")
    return SamplingOptions(
        temperature=temperature,
        top_k=opt("top_k", DEFAULT_TOP_K),
        top_p=top_p,
        min_p=opt("min_p", DEFAULT_MIN_P),
        seed=opt("seed", None),
        repeat_penalty=opt("repeat_penalty", 1.0),
        presence_penalty=opt("presence_penalty", 0.0),
        frequency_penalty=opt("frequency_penalty", 0.0),
        logit_bias=dict(p.logit_bias),
        banned_tokens=banned,
        logprobs=logprobs,
    )


def grammar_for(fmt: runner_pb2.ResponseFormat) -> str | None:
    if fmt.type in ("", "text"):
        return None
    if fmt.type == "json_object":
        return JSON_GBNF
    if fmt.type == "json_schema":
        try:
            json.loads(fmt.json_schema)
            return json_schema_to_gbnf(fmt.json_schema)
        except Exception as exc:  # the converter raises bare errors on schemas it cannot express
            raise invalid(f"response_format.json_schema cannot be used: {exc}") from exc
    raise invalid(f"unknown response_format type {fmt.type!r}: use text, json_object or json_schema")


def messages_of(chat: runner_pb2.Chat) -> list[dict]:
    out = []
    for m in chat.messages:
        msg: dict = {"role": m.role, "content": m.content}
        if m.name:
            msg["name"] = m.name
        if m.tool_call_id:
            msg["tool_call_id"] = m.tool_call_id
        if m.tool_calls:
            msg["tool_calls"] = [
                {"id": c.id, "type": c.type or "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in m.tool_calls
            ]
        out.append(msg)
    return out


class RunnerService(runner_pb2_grpc.RunnerServicer):
    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    async def Generate(
        self, request: runner_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[runner_pb2.GenerateChunk]:
        if not request.model:
            raise invalid("model is required")
        if request.WhichOneof("input") is None:
            raise invalid("either chat or prompt is required")
        if request.sampling.max_tokens < 0:
            raise invalid(f"max_tokens must be >= 0, not {request.sampling.max_tokens}")
        async with self.manager.acquire(request.model, request.keep_alive) as entry:
            job = self._job(request, entry)
            try:
                stream = entry.scheduler.submit(job)
            except QueueFull as exc:
                raise ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from exc
            except ValueError as exc:
                raise invalid(str(exc)) from exc
            # The client going away or the deadline passing cancels the call: free the slot at once.
            context.add_done_callback(lambda _ctx: stream.cancel())
            # With tools offered, the answer is held until it is complete: only then can it be told
            # apart from a tool call.
            held: list[str] | None = [] if self._tools_offered(request) else None
            first = True
            try:
                async for chunk in stream:
                    msg = runner_pb2.GenerateChunk(text=chunk.text, finish_reason=chunk.finish_reason)
                    if first:
                        msg.model = entry.name
                        first = False
                    if chunk.logprobs:
                        msg.logprobs.extend(self._logprobs(entry, chunk.logprobs))
                    if held is not None:
                        held.append(chunk.text)
                        msg.text = ""
                    if chunk.finish_reason:
                        msg.usage.prompt_tokens = chunk.prompt_tokens
                        msg.usage.completion_tokens = chunk.completion_tokens
                        msg.usage.cached_prompt_tokens = chunk.cached_tokens
                        if held is not None:
                            self._finish_with_tool_calls(msg, "".join(held))
                    if msg.text or msg.finish_reason or msg.model or msg.logprobs:
                        yield msg
            except GenerationError as exc:
                raise ServiceError(grpc.StatusCode.INTERNAL, f"generation failed: {exc}") from exc
            finally:
                stream.cancel()

    @staticmethod
    def _tools_offered(request: runner_pb2.GenerateRequest) -> bool:
        if request.WhichOneof("input") != "chat" or not request.chat.tools_json:
            return False
        return request.chat.tool_choice_json.strip() != '"none"'

    @staticmethod
    def _finish_with_tool_calls(msg: runner_pb2.GenerateChunk, answer: str) -> None:
        """Puts the held answer in the last chunk, as tool calls when it is made of them."""
        content, calls = parse_tool_calls(answer)
        msg.text = content
        if calls:
            msg.finish_reason = "tool_calls"
            msg.tool_calls.extend(
                runner_pb2.ToolCall(id=c.id, type="function", name=c.name, arguments=c.arguments) for c in calls
            )

    @staticmethod
    def _default_max_tokens(request: runner_pb2.GenerateRequest, entry: Loaded) -> int:
        """0 (until end of generation or a full context), except for a chat with a base model.

        A model without a chat template of its own (the bundled Gemma 3 270M is one) is not trained to
        end a turn, so a chat with no max_tokens would run on until the context is full: minutes of
        repetition. Such chats get BASE_MODEL_CHAT_MAX_TOKENS, and finish_reason "length" says so.
        """
        builtin = entry.renderer is not None and entry.renderer.format.source.startswith("builtin:")
        return BASE_MODEL_CHAT_MAX_TOKENS if builtin and request.WhichOneof("input") == "chat" else 0

    def _job(self, request: runner_pb2.GenerateRequest, entry: Loaded) -> Job:
        model = entry.model
        if request.WhichOneof("input") == "chat":
            if not request.chat.messages:
                raise invalid("chat.messages is empty")
            if entry.renderer is None:
                raise ServiceError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"{entry.name} has no usable chat template: send a raw prompt instead",
                )
            try:
                tools = json.loads(request.chat.tools_json) if request.chat.tools_json else None
            except ValueError as exc:
                raise invalid(f"tools is not valid JSON: {exc}") from exc
            try:
                text = entry.renderer.render(messages_of(request.chat), tools)
            except ValueError as exc:
                raise invalid(f"cannot format the chat: {exc}") from exc
        else:
            text = request.prompt
        bos = model.facts.bos_text
        prompt = model.tokenize(text, add_special=not (bos and text.startswith(bos)), parse_special=True)
        top = min(max(request.top_logprobs, 0), MAX_TOP_LOGPROBS)
        banned = model.facts.stop_tokens | entry.stop_tokens if request.sampling.ignore_eos else frozenset()
        return Job(
            prompt=prompt,
            sampling=sampling_options(request.sampling, top if request.logprobs else -1, banned),
            max_tokens=request.sampling.max_tokens or self._default_max_tokens(request, entry),
            stop=tuple(request.sampling.stop),
            stop_tokens=entry.stop_tokens,
            ignore_eos=request.sampling.ignore_eos,
            grammar=grammar_for(request.response_format),
        )

    @staticmethod
    def _logprobs(entry: Loaded, sampled: list[Sampled]) -> list[runner_pb2.TokenLogprob]:
        def text(token: int) -> str:
            return TextStream().push(entry.model.piece(token)) or entry.model.piece(token).decode("utf-8", "replace")

        return [
            runner_pb2.TokenLogprob(
                token=text(s.token),
                logprob=s.logprob,
                bytes=entry.model.piece(s.token),
                top=[runner_pb2.TopLogprob(token=text(t), logprob=lp) for t, lp in s.top],
            )
            for s in sampled
        ]

    async def Embed(self, request: runner_pb2.EmbedRequest, context) -> runner_pb2.EmbedResponse:
        if not request.model:
            raise invalid("model is required")
        if not request.inputs:
            raise invalid("inputs is empty")
        async with self.manager.acquire(request.model, request.keep_alive) as entry:
            model = entry.model
            tokens = [model.tokenize(t, add_special=True, parse_special=False) for t in request.inputs]
            if any(not t for t in tokens):
                raise invalid("an input is empty")
            try:
                vectors = await asyncio.to_thread(model.embed, tokens)
            except ValueError as exc:
                raise invalid(str(exc)) from exc
            return runner_pb2.EmbedResponse(
                embeddings=[runner_pb2.Embedding(values=v.tolist()) for v in vectors],
                prompt_tokens=sum(len(t) for t in tokens),
                model=entry.name,
            )

    async def LoadModel(self, request: runner_pb2.LoadModelRequest, context) -> runner_pb2.RunnerInfo:
        if not request.model:
            raise invalid("model is required")
        entry = await self.manager.load(request.model, request.keep_alive)
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
        if not request.model:
            raise invalid("model is required")
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
        return runner_pb2.StatusResponse(
            backends=[
                runner_pb2.BackendStatus(
                    name=backend.name, status="running", version=backend.version(), gpu=backend.gpu_available()
                )
            ]
        )
