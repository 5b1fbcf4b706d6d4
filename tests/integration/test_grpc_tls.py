"""mTLS on the gRPC hops, against real processes and certificates made with `openssl` for each run: a
Store with a certificate and a CA serves only clients holding a certificate of that CA, and the whole
stack (gateway -> Store, Distribution, Runner; Runner -> Store) works over mTLS with plaintext refused."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelrunner.common import tls
from modelrunner.common.channels import open_sync_channel
from modelrunner.v1 import store_pb2, store_pb2_grpc
from tests.conftest import free_port
from tests.support import processes
from tests.support.deploy_scripts import build_descriptors, render
from tests.support.envoy import running_envoy
from tests.support.packaging import package_over_http
from tests.support.stack import Stack

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
SERVER_NAME = "modelrunner.internal"  # the stack's certificate names no IP: channels expect this name


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _ca(d: Path, name: str) -> tuple[Path, Path]:
    cert, key = d / f"{name}.pem", d / f"{name}.key"
    _openssl("req", "-x509", *EC, "-keyout", key, "-out", cert, "-subj", f"/CN={name}", "-days", "2",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    return cert, key


def _issue(d: Path, name: str, ca: tuple[Path, Path], san: str) -> tuple[Path, Path]:
    """A certificate for both ends of a hop (serverAuth and clientAuth), signed by `ca`."""
    cert, key, csr, ext = d / f"{name}.pem", d / f"{name}.key", d / f"{name}.csr", d / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\nextendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("req", "-new", *EC, "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-out", cert,
             "-days", "2", "-extfile", ext)
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    d = tmp_path_factory.mktemp("pki")
    ca, rogue_ca = _ca(d, "ca"), _ca(d, "rogue-ca")
    return {
        "ca": ca,
        "rogue-ca": rogue_ca,
        "store": _issue(d, "store", ca, "IP:127.0.0.1"),
        "client": _issue(d, "client", ca, "DNS:client.internal"),
        "rogue-client": _issue(d, "rogue-client", rogue_ca, "DNS:client.internal"),
        "service": _issue(d, "service", ca, f"DNS:{SERVER_NAME}"),
    }


def _tls_env(pki: dict[str, tuple[Path, Path]], identity: str, **extra: str) -> dict[str, str]:
    cert, key = pki[identity]
    return {"MODELRUNNER_TLS_CERT": str(cert), "MODELRUNNER_TLS_KEY": str(key),
            "MODELRUNNER_TLS_CA": str(pki["ca"][0]), **extra}


def _credentials(pki: dict[str, tuple[Path, Path]], trust: str = "ca", identity: str | None = "client"
                 ) -> grpc.ChannelCredentials:
    cert, key = (p.read_bytes() for p in pki[identity]) if identity else (None, None)
    return grpc.ssl_channel_credentials(pki[trust][0].read_bytes(), private_key=key, certificate_chain=cert)


def _channel(addr: str, credentials: grpc.ChannelCredentials | None) -> grpc.Channel:
    return grpc.insecure_channel(addr) if credentials is None else grpc.secure_channel(addr, credentials)


def _health(addr: str, credentials: grpc.ChannelCredentials | None) -> int:
    with _channel(addr, credentials) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def _refused(addr: str, credentials: grpc.ChannelCredentials | None) -> bool:
    try:
        _health(addr, credentials)
    except grpc.RpcError as err:
        return err.code() == grpc.StatusCode.UNAVAILABLE
    return False


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, pki) -> Iterator[str]:
    """A Store with the `store` certificate and the CA: mTLS on 127.0.0.1."""
    workdir = tmp_path_factory.mktemp("tls-store")
    addr = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "MODELRUNNER_LISTEN": addr, "MODELRUNNER_MODELS_DIR": str(workdir / "models"),
           **_tls_env(pki, "store")}
    proc = processes.start("modelrunner.store", env)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, processes.log_tail(proc)
            try:
                if _health(addr, _credentials(pki)) == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                assert time.monotonic() < deadline, f"the Store did not serve over mTLS at {addr}"
                time.sleep(0.2)
        yield addr
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_client_with_a_certificate_of_the_ca_lists_the_models(store: str, pki) -> None:
    with grpc.secure_channel(store, _credentials(pki)) as channel:
        reply = store_pb2_grpc.StoreStub(channel).ListModels(store_pb2.ListModelsRequest(), timeout=10)
    assert list(reply.models) == []


@pytest.mark.parametrize(
    "client",
    ["plaintext", "no certificate", "certificate of another CA"],
)
def test_a_client_without_a_certificate_of_the_ca_is_refused(store: str, pki, client: str) -> None:
    credentials = {
        "plaintext": None,
        "no certificate": _credentials(pki, identity=None),
        "certificate of another CA": _credentials(pki, identity="rogue-client"),
    }[client]
    with _channel(store, credentials) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            store_pb2_grpc.StoreStub(channel).ListModels(store_pb2.ListModelsRequest(), timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_process_that_parsed_no_flags_dials_with_the_variables(
    store: str, pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the CLI's probes do: open_sync_channel takes MODELRUNNER_TLS_* from the environment."""
    monkeypatch.setattr(tls, "_current", tls._UNSET)
    for variable, value in _tls_env(pki, "client").items():
        monkeypatch.setenv(variable, value)
    with open_sync_channel(store) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_a_client_that_does_not_trust_the_ca_refuses_the_store(store: str, pki) -> None:
    assert _refused(store, _credentials(pki, trust="rogue-ca", identity="rogue-client"))


@pytest.mark.parametrize(
    ("variable", "file", "message"),
    [
        ("MODELRUNNER_TLS_KEY", "missing.key", "cannot be read"),
        ("MODELRUNNER_TLS_KEY", "rogue-client.key", "is not the key of the certificate"),
        ("MODELRUNNER_TLS_CA", "store.key", "holds no PEM certificate"),
    ],
)
def test_a_bad_file_stops_the_service_at_start_naming_it_and_its_variable(
    tmp_path: Path, pki, variable: str, file: str, message: str
) -> None:
    path = pki["ca"][0].parent / file
    env = {**os.environ, "MODELRUNNER_LISTEN": f"127.0.0.1:{free_port()}", "MODELRUNNER_MODELS_DIR": str(tmp_path),
           **_tls_env(pki, "store"), variable: str(path)}
    proc = processes.start("modelrunner.store", env)
    assert proc.wait(timeout=60) != 0
    stderr = processes.log_tail(proc)
    assert f"{variable} (--{variable.removeprefix('MODELRUNNER_').lower().replace('_', '-')}): {path}" in stderr
    assert message in stderr


def test_the_stack_serves_http_over_mtls_between_its_services(tmp_path: Path, pki, tiny_gguf: Path) -> None:
    stack = Stack(tmp_path, _tls_env(pki, "service", MODELRUNNER_TLS_SERVER_NAME=SERVER_NAME)).start()
    try:
        stack.wait_healthy()  # /healthz: the gateway asked the three services' health over mTLS
        assert httpx.get(f"{stack.url}/models", timeout=10).json() == []
        reply = package_over_http(stack.url, tiny_gguf, "ai/tiny", timeout=60)
        assert reply.status_code == 200, reply.text
        assert [m["tags"] for m in httpx.get(f"{stack.url}/models", timeout=10).json()] == [["docker.io/ai/tiny:latest"]]
        chat = httpx.post(f"{stack.url}/v1/chat/completions", timeout=120, json={
            "model": "ai/tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
        assert chat.status_code == 200, chat.text  # the Runner resolved the model with the Store over mTLS
        assert chat.json()["usage"]["completion_tokens"] > 0
        for name in ("store", "distribution", "runner", "gateway"):
            assert _refused(f"127.0.0.1:{stack.ports[name]}", None), name
    finally:
        codes = stack.stop()
    assert codes["gateway"] == 0, stack.log("gateway").read_text()[-3000:]


def test_envoy_dials_the_services_over_mtls(tmp_path: Path, pki) -> None:
    """The edge in front of a TLS stack: render.py --upstream-tls makes the real Envoy's gRPC clusters
    (the transcoded /models routes, its health checks) speak mTLS with the services."""
    stack = Stack(tmp_path, _tls_env(pki, "service", MODELRUNNER_TLS_SERVER_NAME=SERVER_NAME)).start()
    try:
        stack.wait_healthy()
        cert, key = pki["service"]
        config = render.render(
            render.load(),
            descriptors=build_descriptors.build(tmp_path / "modelrunner.pb"),
            upstreams={"gateway": f"127.0.0.1:{stack.http_port}",
                       **{name: f"127.0.0.1:{stack.ports[name]}" for name in ("store", "distribution", "runner")}},
            listen=f"127.0.0.1:{free_port()}", grpc_listen=f"127.0.0.1:{free_port()}",
            probes_listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}",
            upstream_tls=render.UpstreamTls(str(cert), str(key), str(pki["ca"][0]), SERVER_NAME),
        )
        with running_envoy(config, tmp_path) as edge:
            transcoded = httpx.get(f"{edge}/models", headers={"x-modelrunner-transcode": "1"}, timeout=10)
            assert transcoded.status_code == 200, transcoded.text  # Envoy -> Store over mTLS
            assert transcoded.json().get("models", []) == []
    finally:
        stack.stop()
