"""Optional TLS, and mTLS, for the gRPC hops between services, from PEM files the operator provides.

- MODELRUNNER_TLS_CERT and MODELRUNNER_TLS_KEY: this process's identity, the certificate its gRPC server
  presents and the one its channels present as a client.
- MODELRUNNER_TLS_CA: the roots a peer must chain to. On a server it makes a client certificate
  required (mTLS); on a channel it is what the server is verified against (unset: gRPC's default roots).
- MODELRUNNER_TLS_SERVER_NAME: the name channels expect in server certificates instead of the dialled
  host (one certificate for services dialled by pod IP or by several names).

None set: plaintext as before, for loopback and a pod network. The files are read once, at start; a
missing, unreadable or mismatched one stops the process with an error naming the file and its variable.

Health probes: with TLS on, every gRPC port of a service, grpc.health.v1 included, speaks TLS only, and
with a CA only to a client holding a certificate the CA signed. Kubernetes `grpc:` probes cannot do TLS,
so with TLS on they fail and must become exec probes that dial with these files (or tcpSocket probes,
which see only that the port is open); a plaintext container HEALTHCHECK fails the same way.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from modelrunner.common import config
from modelrunner.common.config import Setting


class TlsError(ValueError):
    """A TLS setting or file that cannot be used; the message names the variable and the file."""


@dataclass(frozen=True)
class TlsConfig:
    """The PEM contents read at start; `cert` and `key` are both set or both None."""

    cert: bytes | None
    key: bytes | None
    ca: bytes | None
    server_name: str

    @property
    def mode(self) -> str:
        """What a server of this process asks: "mtls" (client certificates required) or "tls"."""
        return "mtls" if self.ca is not None else "tls"

    def check_can_serve(self) -> None:
        if self.cert is None or self.key is None:
            raise TlsError(
                f"{_named(config.TLS_CA)} is set without {_named(config.TLS_CERT)} and {_named(config.TLS_KEY)}:"
                " a gRPC server needs its own certificate to serve TLS"
            )

    def server_credentials(self) -> grpc.ServerCredentials:
        self.check_can_serve()
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.ca, require_client_auth=self.ca is not None
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert)

    def channel_options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def load(cert: str, key: str, ca: str, server_name: str) -> TlsConfig | None:
    """Reads and checks the files (paths; "" for unset); None when TLS is off."""
    if bool(cert) != bool(key):
        raise TlsError(f"{_named(config.TLS_CERT)} and {_named(config.TLS_KEY)} go together: set both or neither")
    if not (cert or ca):
        if server_name:
            raise TlsError(f"{_named(config.TLS_SERVER_NAME)} is set but TLS is off: set the certificate files too")
        return None
    cert_pem = _read_certificates(config.TLS_CERT, cert) if cert else None
    key_pem = _read_key(key, cert) if key else None
    ca_pem = _read_certificates(config.TLS_CA, ca) if ca else None
    return TlsConfig(cert=cert_pem, key=key_pem, ca=ca_pem, server_name=server_name)


def from_args(args) -> TlsConfig | None:
    """The TLS of a service, from its parsed common settings (flags over variables)."""
    return load(args.tls_cert, args.tls_key, args.tls_ca, args.tls_server_name)


def from_env() -> TlsConfig | None:
    return load(*(setting.value() for setting in config.TLS))


_UNSET = object()
_current: TlsConfig | None | object = _UNSET


def configure(tls: TlsConfig | None) -> None:
    """Sets this process's TLS (init_process does, from the service's settings)."""
    global _current
    _current = tls


def current() -> TlsConfig | None:
    """This process's TLS: what `configure` set, else (a process that parsed no flags, like the CLI's
    probes) the MODELRUNNER_TLS_* variables, read on first use."""
    if _current is _UNSET:
        configure(from_env())
    return _current  # type: ignore[return-value]


def _named(setting: Setting) -> str:
    return f"{setting.env} (--{setting.name})"


def _read(setting: Setting, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsError(f"{_named(setting)}: {path} cannot be read: {exc.strerror or exc}") from None


def _read_certificates(setting: Setting, path: str) -> bytes:
    """The file's bytes once OpenSSL has parsed at least one PEM certificate from it."""
    data = _read(setting, path)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=data.decode("ascii"))
    except (UnicodeDecodeError, ssl.SSLError) as exc:
        raise TlsError(f"{_named(setting)}: {path} holds no PEM certificate ({_reason(exc)})") from None
    return data


def _read_key(path: str, cert_path: str) -> bytes:
    """The key's bytes once OpenSSL has paired it with the certificate (gRPC takes no encrypted key)."""
    data = _read(config.TLS_KEY, path)

    def encrypted() -> bytes:
        raise TlsError(f"{_named(config.TLS_KEY)}: {path} is encrypted; gRPC needs an unencrypted PEM key")

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_path, path, password=encrypted)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsError(
                f"{_named(config.TLS_KEY)}: {path} is not the key of the certificate in"
                f" {_named(config.TLS_CERT)}: {cert_path}"
            ) from None
        raise TlsError(f"{_named(config.TLS_KEY)}: {path} holds no PEM private key ({_reason(exc)})") from None
    return data


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "reason", None) or exc)
