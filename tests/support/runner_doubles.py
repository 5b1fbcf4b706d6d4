"""Test doubles for the Runner's lifecycle and gRPC surface on the tiny GGUF: a fake clock, a resolver
of names to local files (the Store's job in production), and a manager built from them."""

from __future__ import annotations

import grpc

from modelrunner.common.errors import ServiceError
from modelrunner.runner.backends.base import LoadOptions
from modelrunner.runner.backends.llamacpp import LlamaCppBackend
from modelrunner.runner.manager import ManagerConfig, ModelManager
from modelrunner.runner.model_settings import SettingsStore
from modelrunner.runner.resolver import ResolvedModel
from modelrunner.v1 import runner_pb2

DEFAULTS = LoadOptions(context_size=256, parallel=2, threads=1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FileResolver:
    """Names -> local GGUF files (the Store's job in production)."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files

    async def resolve(self, name: str) -> ResolvedModel:
        ref = f"docker.io/ai/{name}:latest"
        if name not in self.files:
            raise ServiceError(grpc.StatusCode.NOT_FOUND, f"model {ref} not found")
        return ResolvedModel(ref, f"sha256:{name}", (self.files[name],), None)


def make_manager(files, tmp_path, clock, **config) -> ModelManager:
    cfg = ManagerConfig(defaults=DEFAULTS, **config)
    return ModelManager(LlamaCppBackend(), FileResolver(files), SettingsStore(tmp_path / "state"), cfg, clock=clock)


def chat_request(model="a", **sampling) -> runner_pb2.GenerateRequest:
    return runner_pb2.GenerateRequest(
        model=model,
        chat=runner_pb2.Chat(messages=[runner_pb2.ChatMessage(role="user", content="hello")]),
        sampling=runner_pb2.SamplingParams(temperature=0, **sampling),
    )
