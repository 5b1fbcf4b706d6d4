"""Pulls from a hostile registry (tests/support/hostile_registry.py) through the real Store and Distribution
(and the gateway, where the HTTP status is the point): every nonsense answer ends the pull with a status
that names it (never UNKNOWN, an HTTP 500 "Unexpected ..."), never a hang, and commits nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import httpx
import pytest

from modelrunner.v1 import store_pb2, store_pb2_grpc
from tests.support.hostile_registry import HostileRegistry
from tests.support.registry import pull
from tests.support.registry import Stack as GrpcStack
from tests.support.stack import Stack

BODY_DEADLINE_S = "2"  # MODELRUNNER_BODY_DEADLINE; the slow manifest drips a byte every 0.5 s
ENV = {"MODELRUNNER_BODY_DEADLINE": BODY_DEADLINE_S}


@pytest.fixture(scope="module")
def registry() -> Iterator[HostileRegistry]:
    hostile = HostileRegistry(drip_s=0.5).start()
    yield hostile
    hostile.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcStack]:
    stack = GrpcStack.start(tmp_path_factory.mktemp("hostile"), ENV)
    yield stack
    stack.stop()


async def failed_pull(stack: GrpcStack, registry: HostileRegistry, mode: str) -> grpc.aio.AioRpcError:
    """The error a pull of `mode` ends with; the Store must list no model afterwards."""
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await pull(stack, f"{registry.host}/{mode}/m:v1")
    async with grpc.aio.insecure_channel(stack.store.addr) as channel:
        models = (await store_pb2_grpc.StoreStub(channel).ListModels(store_pb2.ListModelsRequest())).models
    assert list(models) == []
    return error.value


def assert_names(error: grpc.aio.AioRpcError, code: grpc.StatusCode, *words: str) -> None:
    assert error.code() == code, error.details()
    for word in words:
        assert word in error.details(), error.details()


@pytest.mark.parametrize(("mode", "words"), [
    ("mtype_list", ["mediaType is an array, expected a string"]),
    ("idx_manifests_int", ["manifests is a number, expected an array"]),
    ("idx_platform_str", ["manifests[0]: platform is a string, expected an object"]),
    ("idx_entry_mtype_list", ["manifests[0]: mediaType is an array, expected a string"]),
])
async def test_fields_of_the_wrong_json_type_are_named(stack, registry, mode: str, words: list[str]) -> None:
    assert_names(await failed_pull(stack, registry, mode), grpc.StatusCode.INVALID_ARGUMENT, *words)


@pytest.mark.parametrize(("mode", "words"), [
    ("tok_unicode", ["sent a token with characters no Authorization header can carry"]),
    ("realm_badurl", ["sent its token service 'http://[::1'", "not a valid URL"]),
    ("realm_badport", ["sent its token service 'http://127.0.0.1:99999/token'", "port must be 1 to 65535"]),
    ("redir_badport", ["sent a redirect 'http://127.0.0.1:99999/blob'", "port must be 1 to 65535"]),
    ("redir_badurl", ["Invalid URL in location header"]),  # httpx refuses it before a redirect is followed
])
async def test_tokens_realms_and_redirects_no_request_can_use(stack, registry, mode: str, words: list[str]) -> None:
    assert_names(await failed_pull(stack, registry, mode), grpc.StatusCode.UNAVAILABLE, *words)


@pytest.mark.parametrize(("mode", "words"), [
    ("status418", ["answered HTTP 418"]),
    ("blob418", ["answered HTTP 418"]),
    ("badrange", ["from byte", "with Content-Range 'bytes 0-"]),
])
async def test_unexpected_statuses_and_ranges_are_unavailable_not_unknown(stack, registry, mode: str, words: list[str]) -> None:
    assert_names(await failed_pull(stack, registry, mode), grpc.StatusCode.UNAVAILABLE, *words)


@pytest.mark.parametrize(("mode", "code", "words"), [
    ("redir_loop", grpc.StatusCode.UNAVAILABLE, ["redirected more than 5 times"]),
    ("tok_crlf", grpc.StatusCode.UNAVAILABLE, ["sent a token with characters no Authorization header can carry"]),
    ("huge_size", grpc.StatusCode.INVALID_ARGUMENT, ["layer 0", f"has size {2**64}"]),
])
async def test_blob_failures_keep_their_cause(stack, registry, mode: str, code: grpc.StatusCode, words: list[str]) -> None:
    assert_names(await failed_pull(stack, registry, mode), code, *words)


async def test_a_dripped_manifest_fails_at_the_deadline_rather_than_hanging(stack, registry) -> None:
    error = await failed_pull(stack, registry, "slowmanifest")
    assert_names(error, grpc.StatusCode.DEADLINE_EXCEEDED, "the manifest from registry", f"within {BODY_DEADLINE_S} s")


# -- through the gateway: the HTTP status of an error that comes before any progress -------------------

@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("gateway"), ENV).start(("store", "distribution", "gateway"))
    try:
        wait_for_models(running)
        yield running
    finally:
        running.stop()


def wait_for_models(running: Stack, timeout: float = 90) -> None:
    """Until GET /models answers (no Runner here, so /healthz never would)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{running.url}/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the gateway did not list models within {timeout} s")


@pytest.mark.parametrize(("mode", "status", "words"), [
    ("mtype_list", 400, "mediaType is an array"),
    ("realm_badport", 503, "port must be 1 to 65535"),
    ("status418", 503, "answered HTTP 418"),
    ("slowmanifest", 504, f"within {BODY_DEADLINE_S} s"),
])
def test_the_gateway_answers_a_status_naming_the_registry_s_nonsense(
    gateway: Stack, registry: HostileRegistry, mode: str, status: int, words: str
) -> None:
    reply = httpx.post(f"{gateway.url}/models/create", json={"from": f"{registry.host}/{mode}/m:v1"}, timeout=60)
    assert reply.status_code == status, reply.text
    assert words in reply.json()["error"]["message"]
    assert httpx.get(f"{gateway.url}/models", timeout=10).json() == []
