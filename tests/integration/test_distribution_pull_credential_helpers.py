"""Pulls whose credentials come from a Docker credential helper (`credsStore`, `credHelpers`): a real
docker-registry with htpasswd (or token) auth, a Distribution process with DOCKER_CONFIG and PATH
pointing to fake `docker-credential-<name>` executables.

One registry and one stack serve the Basic-auth cases: the Distribution reads the Docker config at
each pull, so each test writes the config and helpers it needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tests.integration.test_distribution_faults import logs
from tests.support.credential_helpers import calls, path_with, write_docker_config, write_helper
from tests.support.registry import Registry, Stack, dmr_artifact, package_and_push, pull, upload


@dataclass
class Setup:
    registry: Registry
    stack: Stack
    bindir: Path
    config_dir: Path
    name: str  # the model in the registry


def start(tmp: Path, registry: Registry) -> tuple[Stack, Path, Path]:
    bindir, config_dir = tmp / "bin", tmp / "docker"
    write_docker_config(config_dir, {})
    stack = Stack.start(tmp / "stack", {"DOCKER_CONFIG": str(config_dir), "PATH": path_with(bindir)})
    return stack, bindir, config_dir


@pytest.fixture(scope="module")
def basic(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path) -> Iterator[Setup]:
    with Registry("basic") as registry:
        manifest, blobs = dmr_artifact(tiny_gguf.read_bytes())
        upload(registry.url, "team/model", "v1", manifest, blobs, auth=(registry.username, registry.password))
        stack, bindir, config_dir = start(tmp_path_factory.mktemp("helpers"), registry)
        try:
            yield Setup(registry, stack, bindir, config_dir, f"{registry.host}/team/model:v1")
        finally:
            stack.stop()


async def test_creds_store_answers_the_pull(basic: Setup) -> None:
    write_helper(basic.bindir, "store", {basic.registry.host: (basic.registry.username, basic.registry.password)})
    write_docker_config(basic.config_dir, {"credsStore": "store", "auths": {basic.registry.host: {}}})
    messages = await pull(basic.stack, basic.name)
    assert messages[-1].type == "success"
    # asked once for the whole pull (its manifest and every blob), for the registry's host
    assert calls(basic.bindir, "store") == [{"argv": ["get"], "server": basic.registry.host}]
    assert basic.registry.password not in logs(basic.stack)


async def test_cred_helpers_for_the_host_win_over_creds_store(basic: Setup) -> None:
    write_helper(basic.bindir, "host", {basic.registry.host: (basic.registry.username, basic.registry.password)})
    write_docker_config(basic.config_dir, {"credsStore": "not-installed", "credHelpers": {basic.registry.host: "host"}})
    assert (await pull(basic.stack, basic.name))[-1].type == "success"
    assert calls(basic.bindir, "host") == [{"argv": ["get"], "server": basic.registry.host}]


async def test_wrong_credentials_from_a_helper_are_rejected(basic: Setup) -> None:
    write_helper(basic.bindir, "wrong", {basic.registry.host: (basic.registry.username, "wrong-password-456")})
    write_docker_config(basic.config_dir, {"credHelpers": {basic.registry.host: "wrong"}})
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await pull(basic.stack, basic.name)
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "rejected the credentials" in error.value.details() and basic.registry.username in error.value.details()
    assert "wrong-password-456" not in error.value.details() and "wrong-password-456" not in logs(basic.stack)


async def test_missing_or_broken_helper_fails_the_pull_saying_what_to_fix(basic: Setup) -> None:
    config = write_docker_config(basic.config_dir, {"credsStore": "desktop"})
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await pull(basic.stack, basic.name)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = error.value.details()
    assert "docker-credential-desktop" in details and "not on PATH" in details and str(config) in details

    write_helper(basic.bindir, "garbled", raw="not json at all")
    write_docker_config(basic.config_dir, {"credsStore": "garbled"})
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await pull(basic.stack, basic.name)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "docker-credential-garbled" in error.value.details() and "not its JSON" in error.value.details()


async def test_identity_token_from_a_helper_gets_a_registry_token(tmp_path: Path, tiny_gguf: Path) -> None:
    with Registry("token") as registry:
        stack, bindir, config_dir = start(tmp_path, registry)
        try:
            token = registry.token_server.refresh_token
            write_helper(bindir, "store", {registry.host: ("<token>", token)})
            write_docker_config(config_dir, {"credsStore": "store"})
            name = f"{registry.host}/team/model:v1"
            assert (await package_and_push(stack, tiny_gguf, name))[-1].type == "success"
            assert (await pull(stack, name))[-1].type == "success"
            assert token not in logs(stack)
        finally:
            stack.stop()
        oauth = [r for r in registry.token_server.requests if r.get("oauth")]
        assert oauth and all(r["authenticated"] for r in oauth)
        assert not [r for r in registry.token_server.requests if not r.get("oauth")]  # never sent as Basic
        assert "repository:team/model:pull,push" in {s for r in oauth for s in r["scopes"]}
