"""Fixtures of the unit tests: the tiny GGUF copied under three model names, and the Runner's gRPC
surface served in-process over them."""

from __future__ import annotations

import shutil

import grpc
import pytest

from modelrunner.common.server import GrpcService
from modelrunner.runner.service import RunnerService
from modelrunner.v1 import runner_pb2_grpc
from tests.support.runner_doubles import FakeClock, make_manager


@pytest.fixture
def files(tiny_gguf, tmp_path):
    out = {}
    for name in ("a", "b", "c"):
        out[name] = str(shutil.copy(tiny_gguf, tmp_path / f"{name}.gguf"))
    return out


@pytest.fixture
async def runner(files, tmp_path):
    manager = make_manager(files, tmp_path, FakeClock(), max_queue=1)
    server = GrpcService("127.0.0.1:0", ["modelrunner.v1.Runner"])
    runner_pb2_grpc.add_RunnerServicer_to_server(RunnerService(manager), server.server)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    yield runner_pb2_grpc.RunnerStub(channel), manager
    await channel.close()
    await server.stop(0)
    await manager.close()
