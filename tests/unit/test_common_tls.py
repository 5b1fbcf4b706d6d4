"""TLS settings for the gRPC hops: parsed from flags and MODELRUNNER_TLS_* variables, files read and
checked at start, and every error naming the variable and the file it is about."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from modelrunner.common import config, tls

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed certificate and its key, a key of another pair, an encrypted key, a file of text."""
    d = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", *EC, "-nodes", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"),
             "-subj", "/CN=unit", "-days", "2")
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out", str(d / "other.pem"))
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-aes256",
             "-pass", "pass:secret", "-out", str(d / "encrypted.pem"))
    (d / "text.pem").write_text("not a certificate\n")
    return {p.stem: p for p in d.iterdir()}


def _load(cert: Path | str = "", key: Path | str = "", ca: Path | str = "", server_name: str = "") -> tls.TlsConfig | None:
    return tls.load(str(cert), str(key), str(ca), server_name)


def test_the_settings_are_common_to_every_service_with_their_variables() -> None:
    assert {s.env for s in config.TLS} == {
        "MODELRUNNER_TLS_CERT", "MODELRUNNER_TLS_KEY", "MODELRUNNER_TLS_CA", "MODELRUNNER_TLS_SERVER_NAME",
    }
    assert set(config.TLS) <= set(config.COMMON)


def test_a_flag_wins_over_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELRUNNER_TLS_CA", "/from/env.pem")
    monkeypatch.setenv("MODELRUNNER_TLS_SERVER_NAME", "env.internal")
    args = config.parse("t", config.COMMON, ["--tls-ca", "/from/flag.pem"])
    assert (args.tls_ca, args.tls_server_name, args.tls_cert, args.tls_key) == ("/from/flag.pem", "env.internal", "", "")


def test_nothing_set_is_plaintext() -> None:
    assert _load() is None


def test_a_certificate_and_its_key_with_a_ca_is_mtls(files: dict[str, Path]) -> None:
    settings = _load(files["cert"], files["key"], files["cert"], "store.internal")
    assert settings is not None and settings.mode == "mtls"
    assert settings.cert == files["cert"].read_bytes() and settings.key == files["key"].read_bytes()
    assert settings.ca == files["cert"].read_bytes()
    assert settings.channel_options() == [("grpc.ssl_target_name_override", "store.internal")]
    settings.server_credentials()
    settings.channel_credentials()


def test_without_a_ca_a_server_serves_tls_and_asks_no_client_certificate(files: dict[str, Path]) -> None:
    settings = _load(files["cert"], files["key"])
    assert settings is not None and settings.mode == "tls" and settings.ca is None
    assert settings.channel_options() == []


def test_a_ca_alone_is_enough_for_a_client_but_not_for_a_server(files: dict[str, Path]) -> None:
    settings = _load(ca=files["cert"])
    assert settings is not None and settings.cert is None
    settings.channel_credentials()
    with pytest.raises(tls.TlsError, match="MODELRUNNER_TLS_CA .*MODELRUNNER_TLS_CERT .*MODELRUNNER_TLS_KEY"):
        settings.check_can_serve()


@pytest.mark.parametrize("given", ["cert", "key"])
def test_a_certificate_and_a_key_go_together(files: dict[str, Path], given: str) -> None:
    with pytest.raises(tls.TlsError, match="MODELRUNNER_TLS_CERT .*and MODELRUNNER_TLS_KEY .*set both or neither"):
        _load(**{given: files[given]})


def test_a_server_name_without_tls_is_an_error() -> None:
    with pytest.raises(tls.TlsError, match="MODELRUNNER_TLS_SERVER_NAME .*TLS is off"):
        _load(server_name="store.internal")


@pytest.mark.parametrize("variable", ["cert", "key", "ca"])
def test_a_missing_file_is_named_with_its_variable(files: dict[str, Path], tmp_path: Path, variable: str) -> None:
    missing = tmp_path / f"missing-{variable}.pem"
    paths = {"cert": files["cert"], "key": files["key"], "ca": files["cert"], variable: missing}
    with pytest.raises(tls.TlsError) as raised:
        _load(**paths)
    assert f"MODELRUNNER_TLS_{variable.upper()} (--tls-{variable})" in str(raised.value)
    assert f"{missing} cannot be read: No such file" in str(raised.value)


def test_an_unreadable_file_is_named_with_its_variable(files: dict[str, Path]) -> None:
    with pytest.raises(tls.TlsError, match=f"MODELRUNNER_TLS_CA .*{re.escape(str(files['key'].parent))} cannot be read"):
        _load(ca=files["key"].parent)  # a directory


@pytest.mark.parametrize("variable", ["cert", "ca"])
def test_a_file_with_no_certificate_is_named_with_its_variable(files: dict[str, Path], variable: str) -> None:
    paths = {"cert": files["cert"], "key": files["key"], variable: files["text"]}
    expected = f"MODELRUNNER_TLS_{variable.upper()} .*{re.escape(str(files['text']))} holds no PEM certificate"
    with pytest.raises(tls.TlsError, match=expected):
        _load(**paths)


def test_a_private_key_as_certificate_is_refused(files: dict[str, Path]) -> None:
    with pytest.raises(tls.TlsError, match=f"MODELRUNNER_TLS_CERT .*{re.escape(str(files['key']))} holds no PEM certificate"):
        _load(files["key"], files["key"])


def test_a_key_of_another_certificate_names_both_files(files: dict[str, Path]) -> None:
    with pytest.raises(tls.TlsError) as raised:
        _load(files["cert"], files["other"])
    message = str(raised.value)
    assert message.startswith(f"MODELRUNNER_TLS_KEY (--tls-key): {files['other']} is not the key of the certificate")
    assert message.endswith(f"MODELRUNNER_TLS_CERT (--tls-cert): {files['cert']}")


def test_a_file_with_no_key_is_named_with_its_variable(files: dict[str, Path]) -> None:
    with pytest.raises(tls.TlsError, match=f"MODELRUNNER_TLS_KEY .*{re.escape(str(files['text']))} holds no PEM private key"):
        _load(files["cert"], files["text"])


def test_an_encrypted_key_is_refused_without_asking_for_a_password(files: dict[str, Path]) -> None:
    with pytest.raises(tls.TlsError, match=f"MODELRUNNER_TLS_KEY .*{re.escape(str(files['encrypted']))} is encrypted"):
        _load(files["cert"], files["encrypted"])


def test_a_process_that_parsed_no_flags_takes_the_variables_on_first_use(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tls, "_current", tls._UNSET)
    monkeypatch.setenv("MODELRUNNER_TLS_CA", str(files["cert"]))
    assert tls.current() == tls.TlsConfig(cert=None, key=None, ca=files["cert"].read_bytes(), server_name="")
    monkeypatch.setenv("MODELRUNNER_TLS_CA", "")
    assert tls.current() is not None  # read once: a process does not change its TLS midway
    tls.configure(None)
    assert tls.current() is None
