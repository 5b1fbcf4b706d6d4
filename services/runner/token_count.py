"""The Tokenize RPC: how many tokens a chat or a prompt is, counted by the very code Generate uses.

The request becomes the GenerateRequest it stands for and goes through Generate's own validation and
request-to-job step, so the count is the prompt Generate would prefill (same chat template, tools,
BOS handling and tokenizer) and a chat Generate refuses is refused here with the same status.
"""

from __future__ import annotations

import asyncio

from modelrunner.runner.jobs import build_job
from modelrunner.runner.manager import ModelManager
from modelrunner.runner.validation import check_generate
from modelrunner.v1 import runner_pb2


def as_generate(request: runner_pb2.TokenizeRequest) -> runner_pb2.GenerateRequest:
    generate = runner_pb2.GenerateRequest(model=request.model, keep_alive=request.keep_alive)
    kind = request.WhichOneof("input")
    if kind == "chat":
        generate.chat.CopyFrom(request.chat)
    elif kind == "prompt":
        generate.prompt = request.prompt
    return generate


async def tokenize(manager: ModelManager, request: runner_pb2.TokenizeRequest) -> runner_pb2.TokenizeResponse:
    generate = as_generate(request)
    check_generate(generate)
    async with manager.acquire(request.model, request.keep_alive) as entry:
        job = await asyncio.to_thread(build_job, generate, entry, fit=False)  # off the loop, as in Generate
        return runner_pb2.TokenizeResponse(count=len(job.prompt), model=entry.name)
