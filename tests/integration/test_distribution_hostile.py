"""Pulls from and pushes to a hostile registry (tests/support/hostile_registry.py) through the real Store and
Distribution (and the gateway, where the HTTP status is the point): every nonsense answer ends the pull with
a status that names it (never UNKNOWN, an HTTP 500 "Unexpected ..."), never a hang, and commits nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from modelrunner.v1 import store_pb2, store_pb2_grpc
from tests.support.hostile_registry import HostileRegistry, is_weights, of_mode
from tests.support.registry import package_and_push, pull
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
    ("redir_badurl", ["sent a redirect 'http://[::1/blob'", "not a valid URL"]),
    ("redir_badipv6", ["sent a redirect 'http://[zz::1]/blob'", "not a valid URL"]),
])
async def test_tokens_realms_and_redirects_no_request_can_use(stack, registry, mode: str, words: list[str]) -> None:
    assert_names(await failed_pull(stack, registry, mode), grpc.StatusCode.UNAVAILABLE, *words)


@pytest.mark.parametrize("mode", ["redir_badurl", "redir_badipv6", "redir_badport"])
async def test_a_redirect_to_no_url_is_not_retried(stack, registry, mode: str) -> None:
    """A malformed Location is no broken connection: httpx's refusal of it was retried for about 13 s."""
    before = len(registry.seen)
    await failed_pull(stack, registry, mode)
    assert len([r for r in registry.seen[before:] if is_weights(mode, r)]) == 1


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


# -- pushes: a registry that loses the upload sessions it handed out ---------------------------------

@pytest.fixture(scope="module")
def push_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcStack]:
    """A stack of its own (the models packaged to push would show in the pull tests' empty Store), pushing
    one blob at a time: the first to fail ends the push before another opens a session."""
    stack = GrpcStack.start(tmp_path_factory.mktemp("push"), {**ENV, "MODELRUNNER_PULL_CONCURRENCY": "1"})
    yield stack
    stack.stop()


@pytest.mark.parametrize(("mode", "method", "request_name"), [
    ("push_lose_patch", "PATCH", "a PATCH"),
    ("push_lose_commit", "PUT", "the commit PUT"),
])
async def test_lost_upload_sessions_are_the_registry_s_failure_not_a_missing_model(
    push_stack, registry, tiny_gguf: Path, mode: str, method: str, request_name: str
) -> None:
    """A 404 on an upload URL the registry handed out was NOT_FOUND (an HTTP 404: "your model was not
    found"); each blob now starts over once in a new session, and a second loss names the registry's answer."""
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await package_and_push(push_stack, tiny_gguf, f"{registry.host}/{mode}/m:v1")
    assert_names(error.value, grpc.StatusCode.UNAVAILABLE, f"answered HTTP 404 to {request_name} of its upload session",
                 "BLOB_UPLOAD_UNKNOWN", "retry the push")
    lost = of_mode(mode, registry.seen, method, "/uploads/")
    assert len(of_mode(mode, registry.seen, "POST")) == len(lost) == 2  # the blob's session and one more
    assert not of_mode(mode, registry.seen, "PUT", "/manifests/")


async def test_an_upload_session_lost_once_starts_over_and_the_push_completes(
    push_stack, registry, tiny_gguf: Path
) -> None:
    mode = "push_lose_once"
    messages = await package_and_push(push_stack, tiny_gguf, f"{registry.host}/{mode}/m:v1")
    assert messages[-1].type == "success"
    commits = of_mode(mode, registry.seen, "PUT", "/uploads/")
    assert len(of_mode(mode, registry.seen, "POST")) == len(commits) + 1  # one session more, for the lost one
    assert len(of_mode(mode, registry.seen, "PUT", "/manifests/")) == 1


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
    # 502, not 503: the registry answered nonsense; `docker model` reads a 503 as "the runner is not running"
    ("realm_badport", 502, "port must be 1 to 65535"),
    ("status418", 502, "answered HTTP 418"),
    ("slowmanifest", 504, f"within {BODY_DEADLINE_S} s"),
])
def test_the_gateway_answers_a_status_naming_the_registry_s_nonsense(
    gateway: Stack, registry: HostileRegistry, mode: str, status: int, words: str
) -> None:
    reply = httpx.post(f"{gateway.url}/models/create", json={"from": f"{registry.host}/{mode}/m:v1"}, timeout=60)
    assert reply.status_code == status, reply.text
    assert words in reply.json()["error"]["message"]
    assert httpx.get(f"{gateway.url}/models", timeout=10).json() == []
