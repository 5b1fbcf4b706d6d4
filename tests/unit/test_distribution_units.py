"""Unit tests of the Distribution's pure parts: credentials, manifest choice, loopback rule."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import grpc
import pytest

from modelrunner.common import media_types as mt
from modelrunner.common.errors import ServiceError
from modelrunner.distribution.credentials import Credentials, from_env, lookup
from modelrunner.distribution.manifests import parse_model_manifest, pick_from_index
from modelrunner.distribution.registry import RegistryOptions, is_loopback

D1, D2, D3 = ("sha256:" + c * 64 for c in "abc")


def test_env_credentials_prefer_the_per_registry_pair() -> None:
    env = {
        "MODELRUNNER_REGISTRY_USERNAME": "all", "MODELRUNNER_REGISTRY_PASSWORD": "p1",
        "MODELRUNNER_REGISTRY_USERNAME_REG_EXAMPLE_COM_5000": "one", "MODELRUNNER_REGISTRY_PASSWORD_REG_EXAMPLE_COM_5000": "p2",
    }
    assert from_env("reg.example.com:5000", env) == Credentials("one", "p2")
    assert from_env("other.io", env) == Credentials("all", "p1")
    assert from_env("other.io", {}) is None


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


def test_loopback_may_use_http_others_only_when_listed() -> None:
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost:5000") and is_loopback("[::1]:5000")
    assert not is_loopback("registry.example.com")
    options = RegistryOptions(insecure_registries=frozenset({"lan.registry:5000"}))
    assert options.may_use_http("lan.registry:5000", False) and options.may_use_http("x.io", True)
    assert not options.may_use_http("x.io", False)


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
