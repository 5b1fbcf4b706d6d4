"""Credentials stay home and registry answers are bounded: the real Store and Distribution processes
against registry doubles on loopback that record every header they get (tests/support/registry.py).

A password must reach only its own registry host, only after that host's 401 challenge, never after a
redirect or an upload `Location` to another host; blob redirects to a storage host still download,
without it. Oversized manifests, tokens and error bodies and a gzip bomb get clear errors, and the
Distribution stays alive for the next pull.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import grpc
import pytest

from modelrunner.v1 import distribution_pb2, distribution_pb2_grpc
from tests.support.registry import Registry, RegistryDouble, Stack, dmr_artifact, package, pull

USER, PASSWORD = "tester", "pw-Zq7-never-elsewhere"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
MODEL = "team/model"


def creds_for(host: str) -> dict[str, str]:
    suffix = "".join(c if c.isalnum() else "_" for c in host).upper()
    return {f"MODELRUNNER_REGISTRY_USERNAME_{suffix}": USER, f"MODELRUNNER_REGISTRY_PASSWORD_{suffix}": PASSWORD}


@pytest.fixture
def home(tiny_gguf: Path) -> Iterator[RegistryDouble]:
    """The credential's registry: asks for Basic auth, holds the tiny model as team/model:v1."""
    with RegistryDouble(auth=(USER, PASSWORD)) as double:
        double.put_model(MODEL, "v1", *dmr_artifact(tiny_gguf.read_bytes()))
        yield double


@pytest.fixture
def elsewhere(tiny_gguf: Path) -> Iterator[RegistryDouble]:
    """Another host (another port of loopback): anonymous, with the same model."""
    with RegistryDouble() as double:
        double.put_model(MODEL, "v1", *dmr_artifact(tiny_gguf.read_bytes()))
        yield double


def start(tmp_path: Path, env: dict[str, str]) -> Stack:
    return Stack.start(tmp_path / "stack", {"DOCKER_CONFIG": str(tmp_path / "no-docker"), **env})


def logs(stack: Stack) -> str:
    return stack.distribution.log.read_text() + stack.store.log.read_text()


async def failed_pull(stack: Stack, reference: str, insecure: bool = False) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(stack.distribution.addr) as channel:
        stub = distribution_pb2_grpc.DistributionStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            [m async for m in stub.PullModel(distribution_pb2.PullModelRequest(reference=reference, insecure=insecure))]
    return error.value


async def test_the_password_goes_only_to_its_host_and_only_after_a_challenge(
    tmp_path: Path, home: RegistryDouble, elsewhere: RegistryDouble
) -> None:
    stack = start(tmp_path, creds_for(home.host))
    try:
        assert (await pull(stack, f"{home.host}/{MODEL}:v1"))[-1].type == "success"
        assert (await pull(stack, f"{elsewhere.host}/{MODEL}:v1"))[-1].type == "success"
    finally:
        stack.stop()
    assert "authorization" not in home.requests[0].headers  # nothing before the 401
    assert set(home.authorizations()) == {BASIC}
    assert elsewhere.requests and elsewhere.authorizations() == []
    assert all(r.headers.get("accept-encoding") == "identity" for r in home.requests + elsewhere.requests)
    assert PASSWORD not in logs(stack) and BASIC.split()[1] not in logs(stack)


async def test_a_plain_pair_needs_the_host_it_is_for(tmp_path: Path, home: RegistryDouble, elsewhere: RegistryDouble) -> None:
    plain = {"MODELRUNNER_REGISTRY_USERNAME": USER, "MODELRUNNER_REGISTRY_PASSWORD": PASSWORD}
    unbound = start(tmp_path / "unbound", plain)
    try:
        error = await failed_pull(unbound, f"{elsewhere.host}/{MODEL}:v1")
    finally:
        unbound.stop()
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "MODELRUNNER_REGISTRY_HOST" in error.details()
    assert PASSWORD not in error.details() and elsewhere.requests == []

    bound = start(tmp_path / "bound", {**plain, "MODELRUNNER_REGISTRY_HOST": home.host})
    try:
        assert (await pull(bound, f"{elsewhere.host}/{MODEL}:v1"))[-1].type == "success"
        assert (await pull(bound, f"{home.host}/{MODEL}:v1"))[-1].type == "success"
    finally:
        bound.stop()
    assert elsewhere.authorizations() == [] and BASIC in home.authorizations()


async def test_blob_redirects_to_a_storage_host_download_without_the_credential(
    tmp_path: Path, home: RegistryDouble, elsewhere: RegistryDouble
) -> None:
    storage = RegistryDouble()
    storage.blobs.update(home.blobs)
    home.blob_base = storage.url
    stack = start(tmp_path, creds_for(home.host))
    try:
        assert (await pull(stack, f"{home.host}/{MODEL}:v1"))[-1].type == "success"
    finally:
        stack.stop()
        storage.close()
    assert {r.path.split("?")[0].rsplit("/", 1)[-1] for r in storage.requests} == set(home.blobs)
    assert storage.authorizations() == []
    assert any("/blobs/" in r.path and r.headers.get("authorization") == BASIC for r in home.requests)


def redirect_to(url: str):
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(307)
        handler.send_header("Location", url + handler.path)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer


async def test_no_credential_after_a_redirect_to_another_host_nor_to_plain_http_elsewhere(
    tmp_path: Path, home: RegistryDouble, elsewhere: RegistryDouble
) -> None:
    stack = start(tmp_path, creds_for(home.host))
    try:
        # home sends the manifest elsewhere (after its challenge was answered): followed, without the header
        home.overrides = [("GET", rf"/v2/{MODEL}/manifests/v1", redirect_to(elsewhere.url))]
        assert (await pull(stack, f"{home.host}/{MODEL}:v1"))[-1].type == "success"
        assert elsewhere.requests and elsewhere.authorizations() == []
        # to a host that may not use plain HTTP: refused before anything is sent
        home.overrides = [("GET", rf"/v2/{MODEL}/manifests/v2", redirect_to("http://registry.invalid:5000"))]
        error = await failed_pull(stack, f"{home.host}/{MODEL}:v2")
    finally:
        stack.stop()
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "plain HTTP" in error.details()


async def test_an_upload_location_on_another_host_gets_no_credential(
    tmp_path: Path, home: RegistryDouble, elsewhere: RegistryDouble, tiny_gguf: Path
) -> None:
    home.upload_base = elsewhere.url
    home.blobs.clear()  # every blob of the push is uploaded
    stack = start(tmp_path, creds_for(home.host))
    try:
        name = f"{home.host}/team/pushed:v1"
        await package(stack, tiny_gguf, name)
        async with grpc.aio.insecure_channel(stack.distribution.addr) as channel:
            stub = distribution_pb2_grpc.DistributionStub(channel)
            done = [m async for m in stub.PushModel(distribution_pb2.PushModelRequest(name=name))]
    finally:
        stack.stop()
    assert done[-1].type == "success"
    uploads = [r for r in elsewhere.requests if r.path.startswith("/upload/")]
    assert {r.method for r in uploads} == {"PATCH", "PUT"} and elsewhere.authorizations() == []
    assert "team/pushed:v1" in "".join(home.manifests)


async def test_insecure_in_a_request_cannot_allow_plain_http(tmp_path: Path) -> None:
    stack = start(tmp_path, {})
    try:
        error = await failed_pull(stack, "registry.invalid:5000/team/model:v1", insecure=True)
    finally:
        stack.stop()
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "MODELRUNNER_INSECURE_REGISTRIES" in error.details()


def body_answer(status: int, body: bytes, headers: dict[str, str] | None = None, declare_length: bool = True):
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        if declare_length:
            handler.send_header("Content-Length", str(len(body)))
        else:
            handler.send_header("Connection", "close")
            handler.close_connection = True
        handler.end_headers()
        handler.wfile.write(body)

    return answer


def token_challenge(double: RegistryDouble):
    return body_answer(401, b"", {"WWW-Authenticate": f'Bearer realm="{double.url}/token",service="double"'})


async def test_oversized_answers_and_a_gzip_bomb_get_clear_errors_and_the_distribution_lives(
    tmp_path: Path, elsewhere: RegistryDouble
) -> None:
    manifest_path = rf"/v2/{MODEL}/manifests/(\w+)"
    big = b" " * (5 << 20)
    bomb = gzip.compress(b"{" + b" " * (64 << 20) + b"}")
    cases = {
        # (what the registry answers, the error code, words the message must have)
        "declared": (body_answer(200, big, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}),
                     grpc.StatusCode.FAILED_PRECONDITION, "4 MiB"),
        "streamed": (body_answer(200, big, declare_length=False), grpc.StatusCode.FAILED_PRECONDITION, "4 MiB"),
        "bomb": (body_answer(200, bomb, {"Content-Encoding": "gzip"}), grpc.StatusCode.FAILED_PRECONDITION,
                 "Content-Encoding gzip"),
        "error": (body_answer(404, b"x" * (2 << 20)), grpc.StatusCode.NOT_FOUND, "over 1 MiB"),
    }
    stack = start(tmp_path, {})
    try:
        for tag, (answer, code, words) in cases.items():
            elsewhere.overrides = [("GET", manifest_path.replace(r"(\w+)", tag), answer)]
            error = await failed_pull(stack, f"{elsewhere.host}/{MODEL}:{tag}")
            assert error.code() == code and words in error.details(), (tag, error.details())
        elsewhere.overrides = [("GET", r"/v2/.*", token_challenge(elsewhere)),
                               ("GET", r"/token", body_answer(200, b'{"token":"' + b"t" * (2 << 20) + b'"}'))]
        error = await failed_pull(stack, f"{elsewhere.host}/{MODEL}:v1")
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "1 MiB" in error.details()
        elsewhere.overrides = []
        assert (await pull(stack, f"{elsewhere.host}/{MODEL}:v1"))[-1].type == "success"  # still alive
    finally:
        stack.stop()


async def test_no_password_in_the_logs_after_pulls_and_pushes(tmp_path: Path, tiny_gguf: Path) -> None:
    """A real docker-registry with Basic auth; every service logs at debug level."""
    with Registry("basic", username=USER, password=PASSWORD) as registry:
        env = {**creds_for(registry.host), "MODELRUNNER_LOG_LEVEL": "debug"}
        stack = start(tmp_path / "ok", env)
        try:
            name = f"{registry.host}/team/model:v1"
            await package(stack, tiny_gguf, name)
            async with grpc.aio.insecure_channel(stack.distribution.addr) as channel:
                stub = distribution_pb2_grpc.DistributionStub(channel)
                assert [m async for m in stub.PushModel(distribution_pb2.PushModelRequest(name=name))][-1].type == "success"
            assert (await pull(stack, name))[-1].type == "success"
            missing = await failed_pull(stack, f"{registry.host}/team/absent:v1")
            assert missing.code() == grpc.StatusCode.NOT_FOUND
        finally:
            stack.stop()
        wrong = start(tmp_path / "wrong", {**env, **{k: "wrong-Pw-83k" for k in creds_for(registry.host) if "PASSWORD" in k}})
        try:
            refused = await failed_pull(wrong, name)
        finally:
            wrong.stop()
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED and "wrong-Pw-83k" not in refused.details()
    text = logs(stack) + logs(wrong)
    for secret in (PASSWORD, BASIC.split()[1], "wrong-Pw-83k", json.dumps(PASSWORD)[1:-1]):
        assert secret not in text
