"""The issue's crash on the real Gemma 3 270M (its 262k-token vocabulary is where token 1000 exists):
`json_object`, temperature 0 and `logit_bias {"1000": NaN}` aborted the process. The Runner refuses the
NaN; the scheduler, given it anyway, still answers valid JSON or ends cleanly."""

from __future__ import annotations

import json
import math

import grpc
import pytest

from modelrunner.common.errors import ServiceError
from modelrunner.runner.backends.base import LoadOptions
from modelrunner.runner.backends.llamacpp import LlamaCppBackend
from modelrunner.runner.grammars import JSON_OBJECT_SCHEMA, gbnf_for_schema
from modelrunner.runner.manager import ManagerConfig, ModelManager
from modelrunner.runner.model_settings import SettingsStore
from modelrunner.runner.sampling import SamplingOptions
from modelrunner.runner.scheduler import Job, Scheduler
from modelrunner.runner.service import RunnerService
from modelrunner.v1 import runner_pb2
from tests.support.runner_doubles import FakeClock, FileResolver

pytestmark = pytest.mark.slow


class Context:
    def add_done_callback(self, _callback) -> None:
        pass


def json_chat(max_tokens: int = 12) -> runner_pb2.GenerateRequest:
    return runner_pb2.GenerateRequest(
        model="gemma",
        chat=runner_pb2.Chat(messages=[runner_pb2.ChatMessage(role="user", content="A JSON object about Paris")]),
        sampling=runner_pb2.SamplingParams(temperature=0, max_tokens=max_tokens),
        response_format=runner_pb2.ResponseFormat(type="json_object"),
    )


async def test_nan_logit_bias_with_json_object_is_refused_and_cannot_abort_the_engine(gemma_gguf, tmp_path):
    config = ManagerConfig(defaults=LoadOptions(context_size=512, parallel=2))
    manager = ModelManager(
        LlamaCppBackend(), FileResolver({"gemma": str(gemma_gguf)}), SettingsStore(tmp_path), config, clock=FakeClock()
    )
    service = RunnerService(manager)
    request = json_chat()
    request.sampling.logit_bias[1000] = math.nan
    with pytest.raises(ServiceError) as err:
        [c async for c in service.Generate(request, Context())]
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.message.startswith("sampling.logit_bias[1000]")

    served = [c async for c in service.Generate(json_chat(), Context())]
    assert served[-1].finish_reason in ("stop", "length")

    entry = await manager.load("gemma")
    sched: Scheduler = entry.scheduler
    prompt = entry.model.tokenize("Paris as JSON:", add_special=True, parse_special=False)
    for bias in ({1000: math.nan}, {entry.model.tokenize("{", add_special=False, parse_special=False)[0]: math.nan}):
        grammar = entry.model.grammar(gbnf_for_schema(JSON_OBJECT_SCHEMA))
        job = Job(prompt, SamplingOptions(temperature=0, logit_bias=bias), max_tokens=12, grammar=grammar)
        text, reason = "", ""
        async for chunk in sched.submit(job):
            text += chunk.text
            reason = chunk.finish_reason or reason
        assert reason in ("stop", "length")
        if reason == "stop" and text:
            json.loads(text)
    await manager.close()


async def test_a_max_length_5000_schema_constrains_gemma(gemma_gguf, tmp_path):
    config = ManagerConfig(defaults=LoadOptions(context_size=512, parallel=1))
    manager = ModelManager(
        LlamaCppBackend(), FileResolver({"gemma": str(gemma_gguf)}), SettingsStore(tmp_path), config, clock=FakeClock()
    )
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 5000}, "people": {"type": "integer", "minimum": 0}},
        "required": ["city", "people"],
        "additionalProperties": False,
    }
    request = json_chat(max_tokens=24)
    request.response_format.CopyFrom(runner_pb2.ResponseFormat(type="json_schema", json_schema=json.dumps(schema)))
    chunks = [c async for c in RunnerService(manager).Generate(request, Context())]
    text = "".join(c.text for c in chunks)
    assert text.startswith('{') and '"city"' in text[:12], text
    if chunks[-1].finish_reason == "stop":
        value = json.loads(text)
        assert set(value) == {"city", "people"} and value["people"] >= 0
    await manager.close()
