"""An async OCI distribution client: manifests, ranged blob reads, chunked uploads, mounts.

Built on httpx rather than oras-py's Registry, which is synchronous (requests), returns manifests as
parsed JSON (their digest cannot be checked or kept), and has no ranged or resumable transfer. oras
serves the challenge parsing (auth.py) and the manifest Accept list.

Requests without a body, or with a bytes body, are retried with backoff on 429, 5xx and broken
connections; streaming transfers are retried by their caller, which knows where to resume.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import random
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urljoin

import grpc
import httpx
from oras.defaults import default_manifest_accepted_media_types

from modelrunner.common.errors import ServiceError
from modelrunner.distribution.auth import RegistryAuth, login_hint
from modelrunner.distribution.credentials import Credentials

log = logging.getLogger(__name__)

DOCKER_HUB_API = "registry-1.docker.io"
RETRY_STATUSES = {429, 500, 502, 503, 504}
MAX_ATTEMPTS = 6
BACKOFF_BASE_S = 0.25
BACKOFF_MAX_S = 8.0
LOOPBACK_NAMES = {"localhost"}


def is_loopback(registry: str) -> bool:
    host = registry.rsplit(":", 1)[0] if not registry.endswith("]") else registry
    host = host.strip("[]")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class RegistryOptions:
    """How to reach registries: CA bundle, which may use plain HTTP."""

    ca_bundle: str = ""
    insecure_registries: frozenset[str] = frozenset()

    def may_use_http(self, registry: str, insecure: bool) -> bool:
        return insecure or is_loopback(registry) or registry in self.insecure_registries


@dataclass(frozen=True)
class ManifestData:
    raw: bytes
    media_type: str
    digest: str


def backoff(attempt: int, retry_after: str | None = None) -> float:
    if retry_after and retry_after.isdigit():
        return min(float(retry_after), BACKOFF_MAX_S)
    return min(BACKOFF_BASE_S * 2**attempt, BACKOFF_MAX_S) * (0.5 + random.random() / 2)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class TransferError(Exception):
    """A streaming transfer broke in a way worth resuming (connection dropped, 5xx)."""


class RegistryClient:
    """One registry, one repository's scopes. Use as an async context manager."""

    def __init__(
        self,
        registry: str,
        *,
        credentials: Credentials | None,
        scopes: list[str],
        options: RegistryOptions,
        insecure: bool = False,
    ) -> None:
        self.registry = registry
        self.options = options
        self.insecure = insecure
        self.auth = RegistryAuth(registry, credentials, scopes)
        verify: str | bool = options.ca_bundle or True
        self.http = httpx.AsyncClient(
            verify=verify,
            timeout=httpx.Timeout(30.0, read=60.0),
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
            follow_redirects=True,
            headers={"User-Agent": "modelrunner-distribution", "Accept-Encoding": "identity"},
        )
        host = DOCKER_HUB_API if registry == "docker.io" else registry
        self.base = f"https://{host}"
        self._host = host
        self._probed = False

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    def unavailable(self, exc: BaseException) -> ServiceError:
        if _untrusted_certificate(exc):
            return ServiceError(
                grpc.StatusCode.UNAVAILABLE,
                f"the TLS certificate of registry {self.registry} is not trusted: set MODELRUNNER_CA_BUNDLE to "
                "the PEM file of its CA, or list the registry in MODELRUNNER_INSECURE_REGISTRIES for plain HTTP",
            )
        return ServiceError(
            grpc.StatusCode.UNAVAILABLE,
            f"registry {self.registry} is unreachable ({type(exc).__name__}); check the name and the network",
        )

    async def _probe(self) -> None:
        """Picks https, or http for a registry that may use it and does not speak TLS (as docker does)."""
        if self._probed:
            return
        self._probed = True
        if not self.options.may_use_http(self.registry, self.insecure):
            return
        try:
            await self.http.get(f"{self.base}/v2/", timeout=5.0)
        except httpx.TransportError as exc:
            if _untrusted_certificate(exc):  # it speaks TLS: plain HTTP would not help
                raise self.unavailable(exc) from None
            self.base = f"http://{self._host}"

    def url(self, path: str) -> str:
        return urljoin(self.base + "/", path.lstrip("/")) if not path.startswith("http") else path

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | AsyncIterator[bytes] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """Sends with auth; retries what can be replayed. A streamed response must be closed by the caller."""
        await self._probe()
        replayable = content is None or isinstance(content, bytes)
        authenticated = False
        attempt = 0
        while True:
            request = self.http.build_request(
                method, self.url(path), headers={**(headers or {}), **self.auth.header()}, content=content
            )
            try:
                response = await self.http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if not replayable:
                    raise TransferError(f"{type(exc).__name__}") from exc
                attempt += 1
                if attempt >= MAX_ATTEMPTS:
                    raise self.unavailable(exc) from None
                log.info("registry request failed, retrying", extra={"fields": {"registry": self.registry, "error": type(exc).__name__}})
                await asyncio.sleep(backoff(attempt))
                continue
            if response.status_code == 401 and not authenticated and replayable:
                await response.aclose()
                await self.auth.answer(response, self.http)
                authenticated = True
                continue
            if response.status_code in RETRY_STATUSES:
                await response.aclose()
                if not replayable:
                    raise TransferError(f"HTTP {response.status_code}")
                attempt += 1
                if attempt >= MAX_ATTEMPTS:
                    raise ServiceError(
                        grpc.StatusCode.UNAVAILABLE, f"registry {self.registry} keeps answering HTTP {response.status_code}"
                    )
                await asyncio.sleep(backoff(attempt, response.headers.get("Retry-After")))
                continue
            return response

    def check(self, response: httpx.Response, what: str, expected: tuple[int, ...]) -> None:
        """Raises a ServiceError a user understands for an unexpected status."""
        status = response.status_code
        if status in expected:
            return
        detail = _registry_error(response)
        if status == 401:
            raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, f"{what}: authentication required; {login_hint(self.registry)}")
        if status == 403:
            raise ServiceError(grpc.StatusCode.PERMISSION_DENIED, f"{what}: access denied by registry {self.registry}{detail}")
        if status == 404:
            raise ServiceError(grpc.StatusCode.NOT_FOUND, f"{what}: not found{detail}")
        if status == 416:
            raise ServiceError(grpc.StatusCode.OUT_OF_RANGE, f"{what}: range not satisfiable{detail}")
        raise ServiceError(grpc.StatusCode.UNKNOWN, f"{what}: registry {self.registry} answered HTTP {status}{detail}")

    # -- reading --------------------------------------------------------------------------------

    async def get_manifest(self, repository: str, reference: str, *, accept: list[str] | None = None) -> ManifestData:
        """The raw manifest; its digest is checked against a digest reference or Docker-Content-Digest."""
        what = f"model {self.registry}/{repository}{'@' if reference.startswith('sha256:') else ':'}{reference}"
        response = await self.request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            headers={"Accept": ", ".join(accept or default_manifest_accepted_media_types)},
        )
        self.check(response, what, (200,))
        raw = response.content
        digest = sha256_digest(raw)
        claimed = reference if reference.startswith("sha256:") else response.headers.get("Docker-Content-Digest")
        if claimed and claimed.startswith("sha256:") and claimed != digest:
            raise ServiceError(grpc.StatusCode.DATA_LOSS, f"{what}: manifest digest {digest} does not match {claimed}")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return ManifestData(raw, media_type, digest)

    async def open_blob(self, repository: str, digest: str, offset: int) -> httpx.Response:
        """A streamed GET of a blob from `offset` (Range); raises TransferError when worth retrying."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        response = await self.request("GET", f"/v2/{repository}/blobs/{digest}", headers=headers, stream=True)
        if response.status_code in (200, 206):
            return response
        await response.aread()
        self.check(response, f"blob {digest} of {self.registry}/{repository}", (200, 206))
        raise AssertionError("unreachable")

    # -- writing --------------------------------------------------------------------------------

    async def blob_exists(self, repository: str, digest: str) -> bool:
        response = await self.request("HEAD", f"/v2/{repository}/blobs/{digest}")
        if response.status_code == 404:
            return False
        self.check(response, f"blob {digest} of {self.registry}/{repository}", (200,))
        return True

    async def start_upload(self, repository: str, *, mount: str | None = None, source: str | None = None) -> str | None:
        """Opens an upload session and returns its URL; with `mount`, None when the registry mounted the blob."""
        path = f"/v2/{repository}/blobs/uploads/"
        if mount and source:
            path += f"?mount={mount}&from={source}"
        response = await self.request("POST", path, headers={"Content-Length": "0"})
        self.check(response, f"upload to {self.registry}/{repository}", (201, 202))
        if response.status_code == 201:
            return None
        return self._location(response)

    async def upload_chunk(self, location: str, start: int, length: int, body: AsyncIterator[bytes]) -> str:
        """PATCHes bytes [start, start+length) streamed from `body`; returns the next location."""
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{start}-{start + length - 1}",
            "Content-Length": str(length),
        }
        response = await self.request("PATCH", location, headers=headers, content=body)
        if response.status_code in RETRY_STATUSES:
            raise TransferError(f"HTTP {response.status_code}")
        self.check(response, f"upload to {self.registry}", (202,))
        return self._location(response)

    async def upload_offset(self, location: str) -> tuple[int, str]:
        """How many bytes the upload session holds (to resume a broken PATCH), and its location."""
        response = await self.request("GET", location)
        self.check(response, f"upload status on {self.registry}", (204,))
        held = response.headers.get("Range", "")
        end = int(held.rsplit("-", 1)[-1]) + 1 if "-" in held else 0
        return end, self._location(response)

    async def finish_upload(self, location: str, digest: str) -> None:
        separator = "&" if "?" in location else "?"
        response = await self.request("PUT", f"{location}{separator}digest={digest}", content=b"")
        self.check(response, f"commit of blob {digest} on {self.registry}", (201,))

    async def put_manifest(self, repository: str, reference: str, raw: bytes, media_type: str) -> None:
        response = await self.request(
            "PUT", f"/v2/{repository}/manifests/{reference}", headers={"Content-Type": media_type}, content=raw
        )
        self.check(response, f"manifest {self.registry}/{repository}:{reference}", (201, 200))

    def _location(self, response: httpx.Response) -> str:
        location = response.headers.get("Location")
        if not location:
            raise ServiceError(grpc.StatusCode.UNKNOWN, f"registry {self.registry} sent no upload location")
        return urljoin(str(response.request.url), location)


def _registry_error(response: httpx.Response) -> str:
    """The registry's own error message (`{"errors": [{"code", "message"}]}`), if any."""
    try:
        errors = response.json().get("errors") or []
    except (ValueError, AttributeError):
        return ""
    parts = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors if isinstance(e, dict)]
    return f" ({'; '.join(parts)})" if parts else ""


def _untrusted_certificate(exc: BaseException | None) -> bool:
    """TLS failed because the registry's certificate is not trusted (rather than no TLS at all)."""
    while exc is not None:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
