"""A chat with a base model (no chat template of its own) is bounded when the client sets no max_tokens."""

from __future__ import annotations

from modelrunner.runner.backends.base import LoadOptions
from modelrunner.runner.backends.llamacpp import LlamaCppBackend
from modelrunner.runner.jobs import BASE_MODEL_CHAT_MAX_TOKENS
from modelrunner.runner.manager import ManagerConfig, ModelManager
from modelrunner.runner.model_settings import SettingsStore
from modelrunner.runner.service import RunnerService
from modelrunner.v1 import runner_pb2
from tests.support.runner_doubles import FakeClock, FileResolver
from tests.support.tiny_gguf import write_tiny_gguf


class Context:
    def add_done_callback(self, callback) -> None:
        pass


def chat(model: str) -> runner_pb2.GenerateRequest:
    return runner_pb2.GenerateRequest(
        model=model,
        chat=runner_pb2.Chat(messages=[runner_pb2.ChatMessage(role="user", content="hi")]),
        sampling=runner_pb2.SamplingParams(temperature=0, ignore_eos=True),
    )


async def test_base_model_chats_stop_at_the_default_limit_and_instruct_models_do_not(tmp_path):
    files = {
        "base": str(write_tiny_gguf(tmp_path / "base.gguf", chat_template=None, context_length=1024)),
        "instruct": str(write_tiny_gguf(tmp_path / "instruct.gguf", context_length=1024)),
    }
    config = ManagerConfig(defaults=LoadOptions(context_size=1024, parallel=1, threads=1))
    manager = ModelManager(LlamaCppBackend(), FileResolver(files), SettingsStore(tmp_path / "s"), config,
                           clock=FakeClock())
    service = RunnerService(manager)
    try:
        base = [c async for c in service.Generate(chat("base"), Context())][-1]
        assert (base.finish_reason, base.usage.completion_tokens) == ("length", BASE_MODEL_CHAT_MAX_TOKENS)
        instruct = [c async for c in service.Generate(chat("instruct"), Context())][-1]
        assert instruct.finish_reason == "length"
        assert instruct.usage.prompt_tokens + instruct.usage.completion_tokens >= 1000  # ran to the full context
    finally:
        await manager.close()
