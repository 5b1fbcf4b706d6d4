"""A real OCI registry for tests: Debian's `docker-registry serve CONFIG` (CNCF distribution 2.8), and
RegistryDouble, which records the headers it gets and answers what a real registry will not.

It listens on 127.0.0.1 with a free port and keeps its blobs in a temporary folder, so it can be
killed and restarted on the same port and storage (to test resumed pulls). Optional auth:
- basic: an htpasswd file written with Apache's `htpasswd -B` (bcrypt, the only hash it accepts);
- token: a small token server in a thread issues RS256 JWTs signed by a self-signed key made with the
  `openssl` command line (the venv has no `cryptography`), which the registry trusts through
  `rootcertbundle` and the token's `x5c` header.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx

REGISTRY_BIN = "/usr/bin/docker-registry"
SERVICE = "modelrunner-test-registry"
ISSUER = "modelrunner-test-issuer"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """Issues registry tokens (the Docker token flow) to one user, for whatever scope is asked."""

    workdir: Path
    username: str
    password: str
    port: int = 0
    requests: list[dict] = field(default_factory=list)
    refresh_token: str = "test-identity-token"  # the OAuth2 refresh token (a helper's `<token>` Secret) it takes

    def __post_init__(self) -> None:
        self.key = self.workdir / "token.key"
        self.cert = self.workdir / "token.crt"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=modelrunner-test-token", "-keyout", str(self.key), "-out", str(self.cert)],
            check=True, capture_output=True,
        )
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self._server: ThreadingHTTPServer | None = None

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def sign(self, claims: dict) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                                   input=signing_input.encode(), check=True, capture_output=True).stdout
        return f"{signing_input}.{_b64url(signature)}"

    def token_for(self, scopes: list[str], subject: str) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        return self.sign({"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
                          "iat": now, "jti": uuid.uuid4().hex, "access": access})

    def start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                query = parse_qs(urlparse(self.path).query)
                scopes = [s for value in query.get("scope", []) for s in value.split(" ")]
                auth = self.headers.get("Authorization", "")
                expected = "Basic " + base64.b64encode(f"{server.username}:{server.password}".encode()).decode()
                server.requests.append({"scopes": scopes, "authenticated": auth == expected})
                if auth != expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                self._json({"token": server.token_for(scopes, server.username), "expires_in": 300})

            def do_POST(self) -> None:  # noqa: N802: the OAuth2 grant of an identity token
                form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode())
                scopes = [s for value in form.get("scope", []) for s in value.split(" ")]
                granted = form.get("grant_type") == ["refresh_token"] and form.get("refresh_token") == [server.refresh_token]
                server.requests.append({"scopes": scopes, "authenticated": granted, "oauth": True})
                if not granted:
                    self.send_response(401)
                    self.end_headers()
                    return
                self._json({"access_token": server.token_for(scopes, server.username), "expires_in": 300})

            def _json(self, reply: dict) -> None:
                body = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class Registry:
    """A docker-registry process; `auth` is None, "basic" or "token"; `tls` serves HTTPS with a
    self-signed certificate for 127.0.0.1 (`certificate`, the CA bundle a client must trust)."""

    def __init__(
        self, auth: str | None = None, username: str = "tester", password: str = "s3cret-pw", tls: bool = False
    ) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="registry-"))
        self.port = _free_port()
        self.username, self.password = username, password
        self.auth = auth
        self.tls = tls
        self.certificate = self.workdir / "cert.pem"
        self.token_server: TokenServer | None = None
        self._proc: subprocess.Popen | None = None
        self._log = self.workdir / "registry.log"
        self._config = self.workdir / "config.yml"
        self._config.write_text(json.dumps(self._config_dict()))  # YAML is a superset of JSON

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def _config_dict(self) -> dict:
        config: dict = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": str(self.workdir / "data")}, "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": uuid.uuid4().hex},
        }
        if self.tls:
            key = self.workdir / "key.pem"
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                 "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(self.certificate)],
                check=True, capture_output=True,
            )
            config["http"]["tls"] = {"certificate": str(self.certificate), "key": str(key)}
        if self.auth == "basic":
            htpasswd = self.workdir / "htpasswd"
            subprocess.run(["htpasswd", "-Bbc", str(htpasswd), self.username, self.password],
                           check=True, capture_output=True)
            config["auth"] = {"htpasswd": {"realm": "modelrunner-test", "path": str(htpasswd)}}
        elif self.auth == "token":
            self.token_server = TokenServer(self.workdir, self.username, self.password)
            self.token_server.start()
            config["auth"] = {"token": {"realm": self.token_server.realm, "service": SERVICE, "issuer": ISSUER,
                                        "rootcertbundle": str(self.token_server.cert)}}
        elif self.auth is not None:
            raise ValueError(f"unknown auth {self.auth!r}")
        return config

    def start(self, timeout: float = 20.0) -> None:
        log = self._log.open("ab")
        self._proc = subprocess.Popen([REGISTRY_BIN, "serve", str(self._config)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self._log.read_text()[-2000:]}")
            try:
                verify = str(self.certificate) if self.tls else True
                if httpx.get(f"{self.url}/v2/", timeout=1, verify=verify).status_code in (200, 401):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"docker-registry did not answer on {self.host}")

    def _access_lines(self, method: str, fragment: str) -> int:
        return sum(1 for line in self._log.read_text(errors="replace").splitlines()
                   if f'"{method} /v2/' in line and fragment in line)

    def blob_gets(self) -> int:
        """GET requests for blobs the registry has logged so far."""
        return self._access_lines("GET", "/blobs/sha256:")

    def blob_uploads(self) -> int:
        """Blob uploads the registry has completed (a cross-repository mount is not one)."""
        return self._access_lines("PUT", "/blobs/uploads/")

    def kill(self) -> None:
        """SIGKILL, as a crash: connections in flight break."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def close(self) -> None:
        self.stop()
        if self.token_server is not None:
            self.token_server.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Registry:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- artifacts laid out as Docker Model Runner pushes them, uploaded with plain HTTP calls ----------

def sha256_digest(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def dmr_artifact(gguf: bytes, license_text: bytes = b"Apache-2.0\n") -> tuple[bytes, dict[str, bytes]]:
    """(manifest, blobs by digest) for a model as `docker model push` lays it out."""
    manifest, small = dmr_manifest(sha256_digest(gguf), len(gguf), license_text)
    return manifest, {**small, sha256_digest(gguf): gguf}


def dmr_manifest(gguf_digest: str, gguf_size: int, license_text: bytes) -> tuple[bytes, dict[str, bytes]]:
    """The manifest for a GGUF layer known by digest and size, and its config and license blobs."""
    license_digest = sha256_digest(license_text)
    config = json.dumps({
        "config": {"format": "gguf", "quantization": "F32", "parameters": "1.00 M", "architecture": "llama",
                   "size": f"{gguf_size} B", "context_size": 512},
        "descriptor": {"created": "2025-01-01T00:00:00Z"},
        "rootfs": {"type": "rootfs", "diff_ids": [gguf_digest, license_digest]},
    }, separators=(",", ":")).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.docker.ai.model.config.v0.1+json",
                   "digest": sha256_digest(config), "size": len(config)},
        "layers": [
            {"mediaType": "application/vnd.docker.ai.gguf.v3", "digest": gguf_digest, "size": gguf_size},
            {"mediaType": "application/vnd.docker.ai.license", "digest": license_digest, "size": len(license_text)},
        ],
    }, separators=(",", ":")).encode()
    return manifest, {sha256_digest(config): config, license_digest: license_text}


def upload(url: str, repository: str, tag: str, manifest: bytes, blobs: dict[str, bytes],
           auth: tuple[str, str] | None = None,
           media_type: str = "application/vnd.oci.image.manifest.v1+json") -> str:
    """Monolithic uploads (POST then PUT ?digest=) and the manifest; returns the manifest digest."""
    with httpx.Client(base_url=url, auth=auth, timeout=60) as http:
        for digest, data in blobs.items():
            started = http.post(f"/v2/{repository}/blobs/uploads/")
            started.raise_for_status()
            location = started.headers["Location"]
            sep = "&" if "?" in location else "?"
            http.put(f"{location}{sep}digest={digest}", content=data,
                     headers={"Content-Type": "application/octet-stream"}).raise_for_status()
        http.put(f"/v2/{repository}/manifests/{tag}", content=manifest,
                 headers={"Content-Type": media_type}).raise_for_status()
    return sha256_digest(manifest)


# -- the Store and the Distribution as processes, for pulls and pushes against the registry ---------

class ServiceProcess:
    """`python -m modelrunner.<module>` on a free 127.0.0.1 port, ready once its health says SERVING."""

    def __init__(
        self,
        module: str,
        env: dict[str, str],
        workdir: Path,
        launcher: list[str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        """`launcher` runs the command (e.g. in its own mount namespace: see hidden_from); `preexec_fn`
        runs in the child before it (e.g. file_size_limit)."""
        import os

        self.module = module
        self.launcher = launcher or []
        self.preexec_fn = preexec_fn
        self.port = _free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "MODELRUNNER_LOG_FORMAT": "text", "MODELRUNNER_LISTEN": self.addr, **env}
        self.log = workdir / f"{module.rsplit('.', 1)[-1]}-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> ServiceProcess:
        import sys

        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        root = Path(__file__).resolve().parents[2]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*self.launcher, sys.executable, "-m", self.module], env=self.env, cwd=root,
                                         stderr=log, preexec_fn=self.preexec_fn)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.module} exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                with grpc.insecure_channel(self.addr) as channel:
                    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return self
            except grpc.RpcError:
                time.sleep(0.1)
        raise TimeoutError(f"{self.module} did not serve within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def file_size_limit(limit: int) -> Callable[[], None]:
    """A preexec_fn giving the process a full disk without root: a write() past `limit` bytes of any one file
    raises OSError EFBIG (SIGXFSZ ignored, as Python does anyway, so the write fails rather than kill it)."""

    def apply() -> None:
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@contextlib.contextmanager
def gateway(workdir: Path, store_addr: str, distribution_addr: str = "") -> Iterator[str]:
    """The gateway in front of these services (the others' addresses unused), on a free port; yields its
    URL once it serves /models, and stops it on the way out."""
    import os
    import sys

    url = f"http://127.0.0.1:{_free_port()}"
    env = {**os.environ, "MODELRUNNER_STORE_ADDR": store_addr, "MODELRUNNER_HTTP_LISTEN": url.removeprefix("http://"),
           "MODELRUNNER_LISTEN": f"127.0.0.1:{_free_port()}",
           "MODELRUNNER_DISTRIBUTION_ADDR": distribution_addr or f"127.0.0.1:{_free_port()}",
           "MODELRUNNER_RUNNER_ADDR": f"127.0.0.1:{_free_port()}", "MODELRUNNER_LOG_FORMAT": "text"}
    log = workdir / "gateway.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "modelrunner.gateway"], env=env,
                                cwd=Path(__file__).resolve().parents[2], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "gateway did not serve /models"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


def hidden_from(folder: Path) -> list[str] | None:
    """A launcher whose process sees an empty tmpfs at `folder` (its own mount namespace), so it cannot
    read what a client keeps there; None where this machine does not allow `unshare -m`."""
    launcher = ["unshare", "-m", "--propagation", "private", "sh", "-c", 'mount -t tmpfs none "$0" && exec "$@"',
                str(folder)]
    try:
        works = subprocess.run([*launcher, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        works = False
    return launcher if works else None


@dataclass
class Stack:
    """A Store (on `models_dir`) and a Distribution using it."""

    store: ServiceProcess
    distribution: ServiceProcess
    models_dir: Path

    @classmethod
    def start(cls, workdir: Path, env: dict[str, str] | None = None) -> Stack:
        workdir.mkdir(parents=True, exist_ok=True)
        models_dir = workdir / "models"
        store = ServiceProcess("modelrunner.store", {"MODELRUNNER_MODELS_DIR": str(models_dir)}, workdir).start()
        try:
            distribution = ServiceProcess(
                "modelrunner.distribution", {"MODELRUNNER_STORE_ADDR": store.addr, **(env or {})}, workdir
            ).start()
        except BaseException:
            store.stop()
            raise
        return cls(store, distribution, models_dir)

    def stop(self) -> None:
        self.distribution.stop()
        self.store.stop()


async def pull(stack: Stack, reference: str) -> list:
    """Every Progress message of a PullModel through the stack's Distribution."""
    import grpc

    from modelrunner.v1 import distribution_pb2, distribution_pb2_grpc

    async with grpc.aio.insecure_channel(stack.distribution.addr) as channel:
        stub = distribution_pb2_grpc.DistributionStub(channel)
        return [m async for m in stub.PullModel(distribution_pb2.PullModelRequest(reference=reference))]


async def push(stack: Stack, name: str) -> list:
    """Every Progress message of a PushModel of `name` (in the stack's Store) through its Distribution."""
    import grpc

    from modelrunner.v1 import distribution_pb2, distribution_pb2_grpc

    async with grpc.aio.insecure_channel(stack.distribution.addr) as channel:
        stub = distribution_pb2_grpc.DistributionStub(channel)
        return [m async for m in stub.PushModel(distribution_pb2.PushModelRequest(name=name))]


async def package_and_push(stack: Stack, gguf: Path, name: str) -> list:
    """Packages `gguf` as `name` into the stack's Store and pushes it; every Progress message."""
    await package(stack, gguf, name)
    return await push(stack, name)


# -- a registry double that records every request's headers, for what a real registry will not do ----

@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up mid-answer (on an oversized body, as it should) is no error here."""


class RegistryDouble:
    """An OCI registry in a thread on 127.0.0.1 that records each request (method, path, headers).

    It serves the manifests and blobs put in it, takes uploads (POST, PATCH, PUT ?digest=, manifests),
    and asks for Basic auth with a 401 challenge when `auth` is (user, password). `overrides` answer
    instead of it (after the auth check): (method, path regex, handler) tried in order, `handler(request_handler)` writing the
    answer (oversized bodies, gzip bombs, redirects to another double). `upload_base` puts upload
    sessions on another host; `blob_base` redirects blob GETs there (a storage host).
    """

    def __init__(self, auth: tuple[str, str] | None = None) -> None:
        self.auth = auth
        self.requests: list[Recorded] = []
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[bytes, str]] = {}  # "repo:ref" -> (raw, media type)
        self.overrides: list[tuple[str, str, Callable[[BaseHTTPRequestHandler], None]]] = []
        self.upload_base = ""
        self.blob_base = ""
        self._uploads: dict[str, bytearray] = {}
        self._server = _QuietServer(("127.0.0.1", 0), self._handler())
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def put_model(self, repository: str, tag: str, manifest: bytes, blobs: dict[str, bytes]) -> None:
        media_type = json.loads(manifest).get("mediaType", "application/vnd.oci.image.manifest.v1+json")
        self.blobs.update(blobs)
        self.manifests[f"{repository}:{tag}"] = self.manifests[f"{repository}:{sha256_digest(manifest)}"] = (
            manifest, media_type)

    def authorizations(self) -> list[str]:
        return [r.headers.get("authorization", "") for r in self.requests if r.headers.get("authorization")]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> RegistryDouble:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                double.requests.append(Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = urlparse(self.path).path
                if double.auth and not path.startswith("/upload/") and not self._authorized():
                    self.reply(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"login"}]}',
                               {"WWW-Authenticate": 'Basic realm="double"'})
                    return
                for method, pattern, answer in double.overrides:
                    if method == self.command and re.fullmatch(pattern, path):
                        answer(self)
                        return
                self._serve(path, body)

            def _authorized(self) -> bool:
                user, password = double.auth  # type: ignore[misc]
                return self.headers.get("Authorization") == "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

            def _serve(self, path: str, body: bytes) -> None:
                query = parse_qs(urlparse(self.path).query)
                if path == "/v2/":
                    self.reply(200, b"{}")
                elif m := re.fullmatch(r"/v2/(.+)/manifests/(.+)", path):
                    if self.command == "PUT":
                        double.manifests[f"{m[1]}:{m[2]}"] = (body, self.headers.get("Content-Type", ""))
                        self.reply(201, b"")
                        return
                    found = double.manifests.get(f"{m[1]}:{m[2]}")
                    if found is None:
                        self.reply(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}')
                        return
                    self.reply(200, found[0], {"Content-Type": found[1], "Docker-Content-Digest": sha256_digest(found[0])})
                elif m := re.fullmatch(r"/v2/(.+)/blobs/uploads/", path):
                    session = uuid.uuid4().hex
                    double._uploads[session] = bytearray()
                    self.reply(202, b"", {"Location": f"{double.upload_base or ''}/upload/{session}"})
                elif m := re.fullmatch(r"/upload/([0-9a-f]+)", path):
                    data = double._uploads.setdefault(m[1], bytearray())
                    data += body
                    if self.command == "PUT":
                        double.blobs[query["digest"][0]] = bytes(data)
                        self.reply(201, b"")
                    else:
                        self.reply(202, b"", {"Location": f"/upload/{m[1]}", "Range": f"0-{len(data) - 1}"})
                elif m := re.fullmatch(r"(?:/v2/.+)?/blobs/(sha256:[0-9a-f]{64})", path):
                    if double.blob_base and path.startswith("/v2/"):
                        self.reply(307, b"", {"Location": f"{double.blob_base}/blobs/{m[1]}?signature=x"})
                    elif m[1] in double.blobs:
                        self.reply(200, double.blobs[m[1]], {"Content-Type": "application/octet-stream"})
                    else:
                        self.reply(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}')
                else:
                    self.reply(404, b"")

            def reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _handle  # noqa: N815 (http.server's naming)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


async def package(stack: Stack, gguf: Path, name: str, **files: Path) -> object:
    """Uploads `gguf` (and `license_file`, `chat_template`) into the stack's Store and packages it as `name`."""
    import asyncio

    import grpc

    from modelrunner.store.upload import package_files
    from modelrunner.v1 import store_pb2_grpc

    def run() -> object:
        with grpc.insecure_channel(stack.store.addr) as channel:
            return package_files(store_pb2_grpc.StoreStub(channel), [gguf], name, **files)

    return await asyncio.to_thread(run)
