"""Credential helpers (`credsStore`, `credHelpers`): real executables on PATH, the docker CLI's lookup
order, and the errors that say what to fix."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
from pathlib import Path

import grpc
import httpx
import pytest

from modelrunner.common.errors import ServiceError
from modelrunner.common.names import parse_reference
from modelrunner.distribution import credentials
from modelrunner.distribution.auth import RegistryAuth
from modelrunner.distribution.context import Context
from modelrunner.distribution.credentials import CredentialHelperError, Credentials, from_helper, lookup
from tests.support.credential_helpers import calls, path_with, write_docker_config, write_helper

HOST = "reg.example.com:5000"
HUB = "https://index.docker.io/v1/"


def any_url(url: httpx.URL, what: str) -> httpx.URL:
    """RegistryAuth's check of a token realm's URL, as a client that may reach every URL."""
    return url


@pytest.fixture
def docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(bindir on PATH for helpers, DOCKER_CONFIG folder), with no MODELRUNNER_REGISTRY_* variable set."""
    for key in list(os.environ):
        if key.startswith((credentials.ENV_USER, credentials.ENV_PASSWORD)):
            monkeypatch.delenv(key)
    bindir, config_dir = tmp_path / "bin", tmp_path / "docker"
    bindir.mkdir()
    monkeypatch.setenv("PATH", path_with(bindir))
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    return bindir, config_dir


def basic(user: str, password: str) -> dict:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_lookup_order_env_then_cred_helpers_then_creds_store_then_auths(docker, monkeypatch) -> None:
    bindir, config_dir = docker
    write_helper(bindir, "store", {HOST: ("store-user", "store-pw")})
    write_helper(bindir, "special", {"special.io": ("special-user", "special-pw")})
    write_docker_config(config_dir, {
        "credsStore": "store",
        "credHelpers": {"special.io": "special"},
        "auths": {HOST: basic("auths-user", "auths-pw"), "other.io": basic("other-user", "other-pw"),
                  "special.io": basic("x", "y")},
    })
    assert lookup(HOST) == Credentials("store-user", "store-pw")  # the helper wins over `auths`
    assert lookup("special.io") == Credentials("special-user", "special-pw")  # credHelpers over credsStore
    assert lookup("other.io") == Credentials("other-user", "other-pw")  # not in the store: `auths`
    assert lookup("nowhere.io") is None
    assert [c["argv"] for c in calls(bindir, "store")] == [["get"]] * 3
    assert calls(bindir, "special") == [{"argv": ["get"], "server": "special.io"}]

    monkeypatch.setenv(credentials.ENV_USER, "env-user")
    monkeypatch.setenv(credentials.ENV_PASSWORD, "env-pw")
    monkeypatch.setenv(credentials.ENV_HOST, HOST)
    assert lookup(HOST) == Credentials("env-user", "env-pw")
    monkeypatch.setenv(f"{credentials.ENV_USER}_REG_EXAMPLE_COM_5000", "host-user")
    monkeypatch.setenv(f"{credentials.ENV_PASSWORD}_REG_EXAMPLE_COM_5000", "host-pw")
    assert lookup(HOST) == Credentials("host-user", "host-pw")
    assert len(calls(bindir, "store")) == 3  # the environment is enough: no helper runs


def test_docker_hub_is_asked_for_as_the_index_url(docker) -> None:
    bindir, config_dir = docker
    write_helper(bindir, "store", {HUB: ("hub-user", "hub-pw")})
    write_helper(bindir, "hub", {HUB: ("hub-helper-user", "hub-helper-pw")})
    write_docker_config(config_dir, {"credsStore": "store"})
    assert lookup("docker.io") == Credentials("hub-user", "hub-pw")
    assert calls(bindir, "store")[0]["server"] == HUB
    write_docker_config(config_dir, {"credsStore": "store", "credHelpers": {HUB: "hub"}})
    assert lookup("docker.io") == Credentials("hub-helper-user", "hub-helper-pw")


def test_helper_without_credentials_falls_through_to_anonymous(docker) -> None:
    bindir, config_dir = docker
    write_helper(bindir, "store", {})
    write_docker_config(config_dir, {"credsStore": "store", "auths": {HOST: {}}})  # as `docker login` leaves it
    assert lookup(HOST) is None
    assert calls(bindir, "store") == [{"argv": ["get"], "server": HOST}]


def expect_helper_error(registry: str = HOST) -> str:
    with pytest.raises(CredentialHelperError) as error:
        lookup(registry)
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    return error.value.message


def test_missing_helper_names_it_and_the_config_file(docker) -> None:
    _, config_dir = docker
    config = write_docker_config(config_dir, {"credsStore": "desktop", "auths": {HOST: basic("u", "p")}})
    message = expect_helper_error()
    assert "docker-credential-desktop" in message and "not on PATH" in message
    assert str(config) in message and "credsStore" in message
    write_docker_config(config_dir, {"credHelpers": {HOST: "gcloud"}})
    message = expect_helper_error()
    assert "docker-credential-gcloud" in message and "credHelpers" in message


def test_malformed_answer_is_an_error_that_shows_no_secret(docker) -> None:
    bindir, config_dir = docker
    write_helper(bindir, "store", raw='{"Username": "me", "Secret": "hunter2-secret"')  # cut short
    write_docker_config(config_dir, {"credsStore": "store"})
    message = expect_helper_error()
    assert "docker-credential-store" in message and "not its JSON" in message
    assert "hunter2-secret" not in message
    write_helper(bindir, "store", raw='["me", "hunter2-secret"]')
    assert "hunter2-secret" not in expect_helper_error()


def test_crashing_helper_says_how_it_failed(docker) -> None:
    bindir, config_dir = docker
    write_helper(bindir, "store", raw="", stderr="error getting credentials - err: exit status 1, out: `locked`\n",
                 exit_code=2)
    write_docker_config(config_dir, {"credsStore": "store"})
    message = expect_helper_error()
    assert "exit status 2" in message and "locked" in message and "docker-credential-store" in message
    write_helper(bindir, "store", raw='{"Username": "me", "Secret": "hunter2-secret"}', exit_code=3)
    message = expect_helper_error()
    assert "exit status 3" in message and "hunter2-secret" not in message


def test_helper_that_hangs_is_stopped(docker) -> None:
    bindir, config_dir = docker
    write_helper(bindir, "slow", {HOST: ("u", "p")}, sleep=30)
    config = write_docker_config(config_dir, {"credsStore": "slow"})
    with pytest.raises(CredentialHelperError) as error:
        from_helper("slow", HOST, config, "credsStore", timeout=0.5)
    assert "did not answer within 0.5 s" in error.value.message and "docker-credential-slow" in error.value.message


def test_identity_token_is_never_sent_as_basic(docker) -> None:
    bindir, config_dir = docker
    write_helper(bindir, "store", {HOST: ("<token>", "refresh-me")})
    write_docker_config(config_dir, {"credsStore": "store"})
    found = lookup(HOST)
    assert found is not None and found.identity_token and "refresh-me" not in repr(found)
    auth = RegistryAuth(HOST, found, ["repository:team/model:pull"], any_url)
    assert auth.header() == {}


async def test_identity_token_is_exchanged_with_a_refresh_token_grant() -> None:
    seen: list[httpx.Request] = []

    def token_service(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.dumps({"access_token": "access-1", "expires_in": 300}).encode()
        return httpx.Response(200, stream=httpx.ByteStream(body))  # streamed, as the network answers

    auth = RegistryAuth(HOST, Credentials("<token>", "refresh-me"), ["repository:team/model:pull"], any_url)
    challenge = httpx.Response(401, headers={
        "WWW-Authenticate": 'Bearer realm="https://auth.example.com/token",service="reg",scope="repository:team/model:pull"'
    })
    basic_only = RegistryAuth(HOST, Credentials("<token>", "refresh-me"), [], any_url)
    async with httpx.AsyncClient(transport=httpx.MockTransport(token_service)) as http:
        await auth.answer(challenge, http)
        with pytest.raises(ServiceError) as error:
            await basic_only.answer(httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'}), http)
    assert error.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "identity token" in error.value.message and "refresh-me" not in error.value.message
    (request,) = seen
    form = dict(httpx.QueryParams(request.content.decode()))
    assert request.method == "POST" and "authorization" not in request.headers
    assert form == {"grant_type": "refresh_token", "refresh_token": "refresh-me", "client_id": "modelrunner",
                    "scope": "repository:team/model:pull", "service": "reg"}
    assert auth.header() == {"Authorization": "Bearer access-1"}


async def test_context_looks_credentials_up_off_the_event_loop() -> None:
    loop_thread = threading.get_ident()
    threads: list[int] = []

    def slow_lookup(registry: str) -> Credentials:
        threads.append(threading.get_ident())
        time.sleep(0.3)
        return Credentials("u", registry)

    ctx = Context(store=None, credentials=slow_lookup)  # type: ignore[arg-type]
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    try:
        assert await ctx.login(parse_reference(f"{HOST}/team/model:v1")) == Credentials("u", HOST)
    finally:
        ticker.cancel()
    assert threads != [loop_thread] and ticks >= 10
