"""Unit tests of the Distribution's pure parts: credentials, manifest choice, loopback rule."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest

from modelrunner.common import media_types as mt
from modelrunner.common.errors import ServiceError
from modelrunner.distribution.credentials import Credentials, from_env, lookup
from modelrunner.distribution.manifests import parse_model_manifest, pick_from_index
from modelrunner.distribution.auth import RegistryAuth
from modelrunner.distribution.bodies import BodyTooLarge, encoded, limit_text, read_body
from modelrunner.common.oci import Blob
from modelrunner.distribution import push
from modelrunner.distribution.progress import LayerCounter
from modelrunner.distribution.registry import RegistryClient, RegistryOptions, SessionLost, TransferError, is_loopback

D1, D2, D3 = ("sha256:" + c * 64 for c in "abc")


def test_env_credentials_belong_to_one_host() -> None:
    per_host = {"MODELRUNNER_REGISTRY_USERNAME_REG_EXAMPLE_COM_5000": "one",
                "MODELRUNNER_REGISTRY_PASSWORD_REG_EXAMPLE_COM_5000": "p2"}
    plain = {"MODELRUNNER_REGISTRY_USERNAME": "all", "MODELRUNNER_REGISTRY_PASSWORD": "p1"}
    assert from_env("reg.example.com:5000", {**per_host, **plain, "MODELRUNNER_REGISTRY_HOST": "other.io"}) == Credentials("one", "p2")
    assert from_env("other.io", {**plain, "MODELRUNNER_REGISTRY_HOST": "other.io"}) == Credentials("all", "p1")
    assert from_env("evil.example", {**plain, "MODELRUNNER_REGISTRY_HOST": "other.io"}) is None
    assert from_env("docker.io", {**plain, "MODELRUNNER_REGISTRY_HOST": "https://index.docker.io/v1/"}) == Credentials("all", "p1")
    assert from_env("other.io", {}) is None and from_env("evil.example", per_host) is None


def test_a_plain_pair_without_its_host_is_an_error_not_sent_anywhere() -> None:
    plain = {"MODELRUNNER_REGISTRY_USERNAME": "all", "MODELRUNNER_REGISTRY_PASSWORD": "p1"}
    with pytest.raises(ServiceError) as error:
        from_env("evil.example:5000", plain)
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "MODELRUNNER_REGISTRY_HOST" in error.value.message and "p1" not in error.value.message
    assert "MODELRUNNER_REGISTRY_USERNAME_EVIL_EXAMPLE_5000" in error.value.message


def test_docker_config_auths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODELRUNNER_REGISTRY_USERNAME", "MODELRUNNER_REGISTRY_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "config.json").write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hubuser:hubpass").decode()},
        "my.registry:5000": {"username": "u", "password": "p"},
    }}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert lookup("docker.io") == Credentials("hubuser", "hubpass")
    assert lookup("my.registry:5000") == Credentials("u", "p")
    assert lookup("elsewhere.io") is None
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "missing"))
    assert lookup("docker.io") is None


def test_credentials_never_print_the_password() -> None:
    assert "secret" not in repr(Credentials("me", "secret")) and "secret" not in str(Credentials("me", "secret"))


def test_loopback_may_use_http_others_only_when_the_operator_lists_them() -> None:
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost:5000") and is_loopback("[::1]:5000")
    assert not is_loopback("registry.example.com")
    options = RegistryOptions(insecure_registries=frozenset({"lan.registry:5000"}))
    assert options.may_use_http("lan.registry:5000") and options.may_use_http("127.0.0.1:5000")
    assert not options.may_use_http("x.io")
    options.check_insecure("lan.registry:5000", True)
    options.check_insecure("x.io", False)
    with pytest.raises(ServiceError) as error:  # a request's `insecure` cannot widen the operator's list
        RegistryClient("x.io", credentials=Credentials("u", "pw"), scopes=[], options=options, insecure=True)
    assert error.value.code == grpc.StatusCode.PERMISSION_DENIED and "MODELRUNNER_INSECURE_REGISTRIES" in error.value.message


async def test_a_redirect_or_location_over_plain_http_to_a_host_not_allowed_is_refused() -> None:
    async with RegistryClient("reg.example", credentials=None, scopes=[], options=RegistryOptions()) as client:
        assert client.target(httpx.URL("https://storage.example/b"), "a redirect")
        assert client.target(httpx.URL("http://127.0.0.1:9/b"), "a redirect")
        for url in ("http://storage.example/b", "ftp://storage.example/b"):
            with pytest.raises(ServiceError) as error:
                client.target(httpx.URL(url), "a redirect")
            assert error.value.code == grpc.StatusCode.PERMISSION_DENIED and "plain HTTP" in error.value.message


async def test_basic_auth_waits_for_a_challenge() -> None:
    auth = RegistryAuth("reg.example", Credentials("u", "pw"), [], lambda url, what: url)
    assert auth.header() == {}
    challenge = httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
    async with httpx.AsyncClient() as http:
        await auth.answer(challenge, http)
        assert auth.header()["Authorization"].startswith("Basic ")
        with pytest.raises(ServiceError) as rejected:  # the second challenge: the password is wrong
            await auth.answer(challenge, http)
    assert rejected.value.code == grpc.StatusCode.UNAUTHENTICATED and "pw" not in rejected.value.message


async def test_bodies_are_read_within_limits_and_never_decompressed() -> None:
    bomb = gzip.compress(b"\0" * (8 << 20))
    response = httpx.Response(200, headers={"Content-Encoding": "gzip"}, stream=httpx.ByteStream(bomb))
    assert await read_body(response, 1 << 20) == bomb  # the few bytes sent, not 8 MiB
    assert encoded(response.headers) == "gzip" and encoded(httpx.Headers({"Content-Encoding": "identity"})) == ""
    with pytest.raises(BodyTooLarge):
        await read_body(httpx.Response(200, stream=httpx.ByteStream(b"x" * 2048)), 1024)
    assert limit_text(4 << 20) == "4 MiB" and limit_text(1000) == "1000 bytes"


def test_index_prefers_linux_amd64_then_the_first_manifest() -> None:
    index = {"manifests": [
        {"mediaType": mt.OCI_MANIFEST, "digest": D1, "platform": {"os": "linux", "architecture": "arm64"}},
        {"mediaType": mt.OCI_MANIFEST, "digest": D2, "platform": {"os": "linux", "architecture": "amd64"}},
    ]}
    assert pick_from_index(json.dumps(index).encode(), "m") == D2
    index["manifests"].pop()
    assert pick_from_index(json.dumps(index).encode(), "m") == D1
    with pytest.raises(ServiceError) as error:
        pick_from_index(json.dumps({"manifests": [{"mediaType": "text/plain", "digest": D1}]}).encode(), "m")
    assert "text/plain" in error.value.message


def manifest(config_type: str, layer_type: str) -> bytes:
    return json.dumps({"schemaVersion": 2, "config": {"mediaType": config_type, "digest": D1, "size": 2},
                       "layers": [{"mediaType": layer_type, "digest": D2, "size": 10}]}).encode()


def test_model_manifest_accepts_model_media_types_and_names_the_others() -> None:
    parsed = parse_model_manifest(manifest(mt.MODEL_CONFIG, mt.GGUF), D3, "model x")
    assert parsed.total == 12 and [b.digest for b in parsed.blobs] == [D1, D2]
    with pytest.raises(ServiceError) as image:
        parse_model_manifest(manifest("application/vnd.oci.image.config.v1+json", mt.GGUF), D3, "model x")
    assert image.value.code == grpc.StatusCode.INVALID_ARGUMENT and "image.config" in image.value.message
    with pytest.raises(ServiceError) as layer:
        parse_model_manifest(manifest(mt.MODEL_CONFIG, "application/vnd.oci.image.layer.v1.tar"), D3, "model x")
    assert "application/vnd.oci.image.layer.v1.tar" in layer.value.message


@pytest.mark.parametrize("held, offset", [(None, 0), ("0-1023", 1024), ("bytes=0-0", 1)])
async def test_an_upload_status_range_is_read_strictly(held, offset) -> None:
    code, _ = await _upload_status(held)
    assert code == offset


@pytest.mark.parametrize("held", ["0-abc", "bytes=5-9", "0-", "0-99999999999999999999999", "0--1"])
async def test_an_unreadable_upload_status_range_is_the_registrys_error(held) -> None:
    """A registry's garbage Range was a ValueError (500); it names the answer now."""
    with pytest.raises(ServiceError) as error:
        await _upload_status(held)
    assert error.value.code == grpc.StatusCode.UNAVAILABLE and "unreadable Range" in error.value.message


async def _upload_status(held: str | None) -> tuple[int, str]:
    def answer(request: httpx.Request) -> httpx.Response:
        headers = {"Location": "/v2/x/blobs/uploads/1"} | ({"Range": held} if held is not None else {})
        return httpx.Response(204, headers=headers, stream=httpx.ByteStream(b""))

    async with RegistryClient("127.0.0.1:9", credentials=None, scopes=[], options=RegistryOptions()) as client:
        await client.http.aclose()
        client.http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
        client._probed = True
        return await client.upload_offset("http://127.0.0.1:9/v2/x/blobs/uploads/1")


async def test_a_manifest_stored_under_another_digest_fails_the_push() -> None:
    """A registry answering 201 with a Docker-Content-Digest that is not the sent manifest's did not
    keep what was pushed; the push said success before."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, headers={"Docker-Content-Digest": "sha256:" + "0" * 64}, stream=httpx.ByteStream(b""))

    async with RegistryClient("127.0.0.1:9", credentials=None, scopes=[], options=RegistryOptions()) as client:
        await client.http.aclose()
        client.http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
        client._probed = True
        with pytest.raises(ServiceError) as error:
            await client.put_manifest("x", "v1", b"{}", "application/vnd.oci.image.manifest.v1+json")
    assert error.value.code == grpc.StatusCode.DATA_LOSS and "not the" in error.value.message


class _LossyRegistry:
    """Takes the first chunk, breaks on the second, then says it holds nothing: forever."""

    registry = "lossy.example"

    def __init__(self) -> None:
        self.patches = 0

    async def upload_chunk(self, location, offset, length, data):
        async for _ in data:
            pass
        self.patches += 1
        if offset > 0:
            raise TransferError("HTTP 500")
        return location

    async def upload_offset(self, location):
        return 0, location

    def unavailable(self, exc):
        return ServiceError(grpc.StatusCode.UNAVAILABLE, f"registry lossy.example is unreachable ({exc})")


class _Source:
    async def read_all(self, digest, offset):
        yield b"x" * 8

    def read(self, digest, offset):
        return self.read_all(digest, offset)


async def test_a_registry_that_loses_each_chunk_after_a_break_ends_the_push(monkeypatch) -> None:
    """A successful PATCH after the registry moved the offset back is no progress: the push gives up
    after its stalled attempts instead of looping forever."""
    monkeypatch.setattr(push, "backoff", lambda _n: 0)
    client = _LossyRegistry()
    blob = Blob("application/octet-stream", "sha256:" + "a" * 64, 16)
    with pytest.raises(ServiceError) as error:
        await push.upload_blob(client, "x", "/u", blob, _Source(), LayerCounter(blob.digest, 16), 8)
    assert error.value.code == grpc.StatusCode.UNAVAILABLE and client.patches <= 2 * push.MAX_STALLED_ATTEMPTS + 1


def _mocked(answer) -> RegistryClient:
    """A client of 127.0.0.1:9 whose every request `answer` (an httpx.Request -> httpx.Response) answers."""
    client = RegistryClient("127.0.0.1:9", credentials=None, scopes=[], options=RegistryOptions())
    client.http = httpx.AsyncClient(transport=httpx.MockTransport(answer), event_hooks=client.http.event_hooks)
    client._probed = True
    return client


UPLOAD_UNKNOWN = b'{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"blob upload unknown to registry"}]}'
SESSION = "http://127.0.0.1:9/v2/x/blobs/uploads/1"


async def _chunk() -> AsyncIterator[bytes]:
    yield b"x" * 8


@pytest.mark.parametrize(("call", "request_name"), [
    (lambda c: c.upload_chunk(SESSION, 0, 8, _chunk()), "a PATCH"),
    (lambda c: c.upload_offset(SESSION), "the status GET"),
    (lambda c: c.finish_upload(SESSION, D1), "the commit PUT"),
])
async def test_a_404_on_an_upload_session_is_the_session_lost_not_a_missing_model(call, request_name) -> None:
    """It was NOT_FOUND, which the gateway answers as an HTTP 404: "your model was not found"."""
    async with _mocked(lambda request: httpx.Response(404, stream=httpx.ByteStream(UPLOAD_UNKNOWN))) as client:
        with pytest.raises(SessionLost) as lost:
            await call(client)
    assert str(lost.value) == (f"registry 127.0.0.1:9 answered HTTP 404 to {request_name} of its upload session "
                               "(BLOB_UPLOAD_UNKNOWN: blob upload unknown to registry)")


@pytest.mark.parametrize("location", ["http://[::1/x", "http://[zz::1]/x", "http://[::1]:99999/x"])
@pytest.mark.parametrize("method", ["GET", "PATCH"])
async def test_a_redirect_to_no_url_fails_at_once_naming_it(method: str, location: str) -> None:
    """httpx's refusal of the Location was a RemoteProtocolError, retried as a broken connection (13 s)."""
    sent = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(307, headers={"Location": location}, stream=httpx.ByteStream(b""))

    async with _mocked(answer) as client:
        with pytest.raises(ServiceError) as error:
            await client.request(method, "/v2/x/blobs/" + D1, content=b"" if method == "PATCH" else None)
    assert error.value.code == grpc.StatusCode.UNAVAILABLE
    assert f"registry 127.0.0.1:9 sent a redirect {location!r}, which is unusable" in error.value.message
    assert len(sent) == 1


class _ForgetfulRegistry:
    """Loses the first `losses` upload sessions at their first PATCH."""

    registry = "forgetful.example"

    def __init__(self, losses: int) -> None:
        self.losses, self.sessions, self.committed = losses, ["/u0"], []

    async def start_upload(self, repository):
        self.sessions.append(f"/u{len(self.sessions)}")
        return self.sessions[-1]

    async def upload_chunk(self, location, offset, length, data):
        async for _ in data:
            pass
        if int(location[2:]) < self.losses:
            raise SessionLost(f"registry {self.registry} answered HTTP 404 to a PATCH of its upload session")
        return location

    async def finish_upload(self, location, digest):
        self.committed.append(location)


async def test_an_upload_session_the_registry_loses_starts_over_once() -> None:
    client = _ForgetfulRegistry(losses=1)
    blob = Blob("application/octet-stream", D1, 16)
    await push.upload_blob(client, "x", "/u0", blob, _Source(), LayerCounter(blob.digest, 16), 8)
    assert client.sessions == ["/u0", "/u1"] and client.committed == ["/u1"]


async def test_a_second_lost_upload_session_ends_the_push_as_unavailable() -> None:
    client = _ForgetfulRegistry(losses=2)
    blob = Blob("application/octet-stream", D1, 16)
    with pytest.raises(ServiceError) as error:
        await push.upload_blob(client, "x", "/u0", blob, _Source(), LayerCounter(blob.digest, 16), 8)
    assert error.value.code == grpc.StatusCode.UNAVAILABLE
    assert error.value.message == (
        f"the upload of blob {D1} to forgetful.example/x failed: registry forgetful.example answered HTTP 404 to a "
        "PATCH of its upload session, the second session of this blob it lost; retry the push"
    )
    assert client.sessions == ["/u0", "/u1"] and client.committed == []
