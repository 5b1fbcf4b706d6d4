"""An async OCI distribution client: manifests, ranged blob reads, chunked uploads, mounts.

Built on httpx rather than oras-py's Registry, which is synchronous (requests), returns manifests as
parsed JSON (their digest cannot be checked or kept), and has no ranged or resumable transfer. oras
serves the challenge parsing (auth.py) and the manifest Accept list.

What a registry may make this client do is bounded:
- The credential goes only to the registry's own host (and the token service its challenge names), only
  after it asked (a 401), and only over TLS unless the operator allowed plain HTTP for that host
  (loopback, MODELRUNNER_INSECURE_REGISTRIES; a request cannot widen that). Redirects and upload
  `Location`s are followed by hand: to another host without the Authorization header (blob redirects to
  a storage host still work), never over plain HTTP to a host not allowed it.
- Bodies are read as streams with limits (manifests and configs 4 MiB, tokens and error bodies 1 MiB),
  asked as `identity` and never decompressed (a gzip bomb stays the few bytes it was sent as).

Requests without a body, or with a bytes body, are retried with backoff on 429, 5xx and broken
connections; streaming transfers are retried by their caller, which knows where to resume.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
import random
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urljoin

import grpc
import httpx
from oras.defaults import default_manifest_accepted_media_types

from modelrunner.common.errors import ServiceError
from modelrunner.common.names import MAX_PORT
from modelrunner.distribution.auth import RegistryAuth, login_hint
from modelrunner.distribution.bodies import (
    MAX_ERROR_BYTES,
    MAX_MANIFEST_BYTES,
    BodyTooLarge,
    encoded,
    limit_text,
    read_body,
)
from modelrunner.distribution.credentials import Credentials

log = logging.getLogger(__name__)

DOCKER_HUB_API = "registry-1.docker.io"
RETRY_STATUSES = {429, 500, 502, 503, 504}
MAX_ATTEMPTS = 6
BACKOFF_BASE_S = 0.25
BACKOFF_MAX_S = 8.0
LOOPBACK_NAMES = {"localhost"}
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
MAX_REDIRECTS = 5
_HELD_RANGE = re.compile(r"(?:bytes=)?0-([0-9]{1,18})")  # an upload session's bytes, as the distribution spec says


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
    """How to reach registries: CA bundle, which hosts may use plain HTTP (the operator's list)."""

    ca_bundle: str = ""
    insecure_registries: frozenset[str] = frozenset()

    def may_use_http(self, registry: str) -> bool:
        return is_loopback(registry) or registry in self.insecure_registries

    def check_insecure(self, registry: str, insecure: bool) -> None:
        """A request's `insecure` may only ask for what the operator allowed."""
        if insecure and not self.may_use_http(registry):
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"insecure: plain HTTP to registry {registry} is not allowed; the operator lists the registries "
                "that may use it in MODELRUNNER_INSECURE_REGISTRIES (loopback always may)",
            )


@dataclass(frozen=True)
class Answer:
    """A registry's answer, its body read (within a limit); `oversized` when the body went past it."""

    status_code: int
    headers: httpx.Headers
    url: httpx.URL
    body: bytes
    oversized: bool = False


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


class SessionLost(Exception):
    """The registry answered 404 on an upload session it handed out: it lost the session (expired, or asked
    of a node without it). Never NOT_FOUND, an HTTP 404 that reads as "no such model": the blob can start
    over in a new session (push.py)."""


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
        options.check_insecure(registry, insecure)
        host = DOCKER_HUB_API if registry == "docker.io" else registry
        self.base = _base_url(host)  # before the connection pool: a bad name leaves nothing to close
        self.registry = registry
        self.options = options
        verify: str | bool = options.ca_bundle or True
        self.http = httpx.AsyncClient(
            verify=verify,
            timeout=httpx.Timeout(30.0, read=60.0),
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
            follow_redirects=False,  # followed by hand: see _send
            headers={"User-Agent": "modelrunner-distribution", "Accept-Encoding": "identity"},
            event_hooks={"response": [self._parse_redirect]},
        )
        self.auth = RegistryAuth(registry, credentials, scopes, self.target)
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
            f"registry {self.registry} is unreachable ({describe(exc)}); check the name and the network",
        )

    async def _probe(self) -> None:
        """Picks https, or http for a registry that may use it and does not speak TLS (as docker does)."""
        if self._probed:
            return
        self._probed = True
        if not self.options.may_use_http(self.registry):
            return
        try:
            response = await self.http.send(self.http.build_request("GET", f"{self.base}/v2/", timeout=5.0), stream=True)
            await response.aclose()
        except httpx.TransportError as exc:
            if _untrusted_certificate(exc):  # it speaks TLS: plain HTTP would not help
                raise self.unavailable(exc) from None
            self.base = f"http://{self._host}"

    def url(self, path: str) -> httpx.URL:
        return httpx.URL(urljoin(self.base + "/", path.lstrip("/")) if not path.startswith("http") else path)

    def target(self, location: str | httpx.URL, what: str, *, base: httpx.URL | None = None) -> httpx.URL:
        """`location` (relative to `base`) parsed, if this client may send to it: https, or http to a host
        the operator allows it. Every URL a registry gives (redirects, upload locations, token realms)
        comes through here, so a bad one is a status naming it, never an httpx or socket error."""
        url = _registry_url(location, base, f"registry {self.registry} sent {what}")
        if url.scheme == "https" or (url.scheme == "http" and self.options.may_use_http(_authority(url))):
            return url
        raise ServiceError(
            grpc.StatusCode.PERMISSION_DENIED,
            f"registry {self.registry} sent {what} to {url.scheme}://{_authority(url)}, which this Distribution "
            "does not reach over plain HTTP (https only; loopback and MODELRUNNER_INSECURE_REGISTRIES may use http)",
        )

    async def _parse_redirect(self, response: httpx.Response) -> None:
        """A redirect's Location parsed before httpx does (it builds the next request even when not following
        it): one no URL can be made of is the registry's error naming it, at once, not a RemoteProtocolError
        that _send retries for seconds as if the connection had broken."""
        location = response.headers.get("Location")
        if response.status_code in REDIRECT_STATUSES and location:
            _registry_url(location, response.request.url, f"registry {self.registry} sent a redirect")

    def _home(self, url: httpx.URL) -> bool:
        """Whether `url` is on the registry's own host, the only one its credential goes to."""
        base = httpx.URL(self.base)
        return url.host == base.host and _port(url) == _port(base) and url.scheme == base.scheme

    async def open(
        self, method: str, path: str, *, headers: dict[str, str] | None = None,
        content: bytes | AsyncIterator[bytes] | None = None,
    ) -> httpx.Response:
        """Sends, following redirects of GET and HEAD by hand; the streamed response must be closed."""
        await self._probe()
        url = self.url(path)
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._send(method, url, headers, content)
            location = response.headers.get("Location")
            if response.status_code not in REDIRECT_STATUSES or not location or method not in ("GET", "HEAD"):
                return response
            await response.aclose()
            url = self.target(location, "a redirect", base=url)
        raise ServiceError(grpc.StatusCode.UNAVAILABLE, f"registry {self.registry} redirected more than {MAX_REDIRECTS} times")

    async def request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None,
        content: bytes | AsyncIterator[bytes] | None = None, limit: int = MAX_ERROR_BYTES, what: str = "",
    ) -> Answer:
        """Sends and reads the answer's body within `limit` (past it: FAILED_PRECONDITION for a success;
        an error status keeps its status, its body unread past MAX_ERROR_BYTES)."""
        response = await self.open(method, path, headers=headers, content=content)
        if response.status_code >= 400:
            limit = min(limit, MAX_ERROR_BYTES)
        try:
            try:
                slow = f"{what or f'the answer to {method} {path}'} from registry {self.registry}"
                body = b"" if method == "HEAD" else await read_body(response, limit, slow)  # HEAD declares, sends none
                oversized = False
            except BodyTooLarge:
                if response.status_code < 400:
                    raise ServiceError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"{what or 'a request'}: registry {self.registry} answered with more than {limit_text(limit)} "
                        "(the limit); nothing was kept",
                    ) from None
                body, oversized = b"", True
            except (httpx.TransportError, httpx.StreamError) as exc:
                raise self.unavailable(exc) from None
        finally:
            await response.aclose()
        return Answer(response.status_code, response.headers, response.request.url, body, oversized)

    async def _send(
        self, method: str, url: httpx.URL, headers: dict[str, str] | None, content: bytes | AsyncIterator[bytes] | None
    ) -> httpx.Response:
        """One URL with auth (only at home) and retries of what can be replayed; the response is streamed."""
        replayable = content is None or isinstance(content, bytes)
        home = self._home(url)
        challenges = 0
        attempt = 0
        while True:
            sent = {**(headers or {}), **(self.auth.header() if home else {})}
            request = self.http.build_request(method, url, headers=sent, content=content)
            try:
                response = await self.http.send(request, stream=True)
            except httpx.TransportError as exc:
                if not replayable:
                    raise TransferError(describe(exc)) from exc
                attempt += 1
                if attempt >= MAX_ATTEMPTS:
                    raise self.unavailable(exc) from None
                log.info("registry request failed, retrying", extra={"fields": {"registry": self.registry, "error": describe(exc)}})
                await asyncio.sleep(backoff(attempt))
                continue
            if response.status_code == 401 and home and replayable and challenges < 2:
                await response.aclose()
                await self.auth.answer(response, self.http)
                challenges += 1
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

    def check(self, answer: Answer, what: str, expected: tuple[int, ...]) -> None:
        """Raises a ServiceError a user understands for an unexpected status."""
        status = answer.status_code
        if status in expected:
            return
        detail = _registry_error(answer)
        if status == 401:
            raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, f"{what}: authentication required; {login_hint(self.registry)}")
        if status == 403:
            raise ServiceError(grpc.StatusCode.PERMISSION_DENIED, f"{what}: access denied by registry {self.registry}{detail}")
        if status == 404:
            raise ServiceError(grpc.StatusCode.NOT_FOUND, f"{what}: not found{detail}")
        if status == 416:
            raise ServiceError(grpc.StatusCode.OUT_OF_RANGE, f"{what}: range not satisfiable{detail}")
        # UNAVAILABLE (503), as gRPC's own HTTP mapping has an upstream's unexpected answer: the registry
        # did not serve this, and the message says what it answered (UNKNOWN would be an HTTP 500, our bug).
        raise ServiceError(
            grpc.StatusCode.UNAVAILABLE, f"{what}: registry {self.registry} answered HTTP {status}, unexpected here{detail}"
        )

    def check_session(self, answer: Answer, request: str, what: str, expected: tuple[int, ...]) -> None:
        """`check` for a request on an upload session's URL, where a 404 is SessionLost naming the answer."""
        if answer.status_code == 404:
            detail = _registry_error(answer)
            raise SessionLost(f"registry {self.registry} answered HTTP 404 to {request} of its upload session{detail}")
        self.check(answer, what, expected)

    # -- reading --------------------------------------------------------------------------------

    async def get_manifest(self, repository: str, reference: str, *, accept: list[str] | None = None) -> ManifestData:
        """The raw manifest; its digest is checked against a digest reference or Docker-Content-Digest."""
        what = f"model {self.registry}/{repository}{'@' if reference.startswith('sha256:') else ':'}{reference}"
        answer = await self.request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            headers={"Accept": ", ".join(accept or default_manifest_accepted_media_types)},
            limit=MAX_MANIFEST_BYTES,
            what=f"{what}: the manifest",
        )
        self.check(answer, what, (200,))
        raw = self.plain(answer, f"{what}: the manifest")
        digest = sha256_digest(raw)
        claimed = reference if reference.startswith("sha256:") else answer.headers.get("Docker-Content-Digest")
        if claimed and claimed.startswith("sha256:") and claimed != digest:
            raise ServiceError(grpc.StatusCode.DATA_LOSS, f"{what}: manifest digest {digest} does not match {claimed}")
        media_type = answer.headers.get("Content-Type", "").split(";")[0].strip()
        return ManifestData(raw, media_type, digest)

    async def get_small_blob(self, repository: str, digest: str, what: str) -> bytes:
        """A blob read whole (a config), within the manifest limit, not decompressed."""
        answer = await self.request("GET", f"/v2/{repository}/blobs/{digest}", limit=MAX_MANIFEST_BYTES, what=what)
        self.check(answer, what, (200,))
        return self.plain(answer, what)

    def plain(self, answer: Answer, what: str) -> bytes:
        """The body as sent, refused when the registry encoded it anyway (it is never decompressed)."""
        encoding = encoded(answer.headers)
        if encoding:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{what}: registry {self.registry} sent it with Content-Encoding {encoding} although identity was "
                "asked; it is not decompressed",
            )
        return answer.body

    async def open_blob(self, repository: str, digest: str, offset: int) -> httpx.Response:
        """A streamed GET of a blob from `offset` (Range); raises TransferError when worth retrying."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        response = await self.open("GET", f"/v2/{repository}/blobs/{digest}", headers=headers)
        if response.status_code in (200, 206):
            return response
        try:
            what = f"an error about blob {digest} from registry {self.registry}"
            body, oversized = await read_body(response, MAX_ERROR_BYTES, what), False
        except BodyTooLarge:
            body, oversized = b"", True
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise TransferError(describe(exc)) from exc
        finally:
            await response.aclose()
        answer = Answer(response.status_code, response.headers, response.request.url, body, oversized)
        self.check(answer, f"blob {digest} of {self.registry}/{repository}", (200, 206))
        raise AssertionError("unreachable")

    # -- writing --------------------------------------------------------------------------------

    async def blob_exists(self, repository: str, digest: str) -> bool:
        answer = await self.request("HEAD", f"/v2/{repository}/blobs/{digest}")
        if answer.status_code == 404:
            return False
        self.check(answer, f"blob {digest} of {self.registry}/{repository}", (200,))
        return True

    async def start_upload(self, repository: str, *, mount: str | None = None, source: str | None = None) -> str | None:
        """Opens an upload session and returns its URL; with `mount`, None when the registry mounted the blob."""
        path = f"/v2/{repository}/blobs/uploads/"
        if mount and source:
            path += f"?mount={mount}&from={source}"
        answer = await self.request("POST", path, headers={"Content-Length": "0"})
        self.check(answer, f"upload to {self.registry}/{repository}", (201, 202))
        if answer.status_code == 201:
            return None
        return self._location(answer)

    async def upload_chunk(self, location: str, start: int, length: int, body: AsyncIterator[bytes]) -> str:
        """PATCHes bytes [start, start+length) streamed from `body`; returns the next location."""
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{start}-{start + length - 1}",
            "Content-Length": str(length),
        }
        answer = await self.request("PATCH", location, headers=headers, content=body)
        if answer.status_code in RETRY_STATUSES:
            raise TransferError(f"HTTP {answer.status_code}")
        self.check_session(answer, "a PATCH", f"upload to {self.registry}", (202,))
        return self._location(answer)

    async def upload_offset(self, location: str) -> tuple[int, str]:
        """How many bytes the upload session holds (to resume a broken PATCH), and its location."""
        answer = await self.request("GET", location)
        self.check_session(answer, "the status GET", f"upload status on {self.registry}", (204,))
        held = answer.headers.get("Range", "").strip()
        if not held:
            return 0, self._location(answer)
        match = _HELD_RANGE.fullmatch(held)
        if match is None:
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE,
                f"registry {self.registry} answered the upload status with an unreadable Range {held[:64]!r} "
                "(expected 0-<last byte>)",
            )
        return int(match.group(1)) + 1, self._location(answer)

    async def finish_upload(self, location: str, digest: str) -> None:
        separator = "&" if "?" in location else "?"
        answer = await self.request("PUT", f"{location}{separator}digest={digest}", content=b"")
        self.check_session(answer, "the commit PUT", f"commit of blob {digest} on {self.registry}", (201,))

    async def put_manifest(self, repository: str, reference: str, raw: bytes, media_type: str) -> None:
        answer = await self.request(
            "PUT", f"/v2/{repository}/manifests/{reference}", headers={"Content-Type": media_type}, content=raw
        )
        self.check(answer, f"manifest {self.registry}/{repository}:{reference}", (201, 200))
        stored = answer.headers.get("Docker-Content-Digest", "")
        sent = sha256_digest(raw)
        if stored.startswith("sha256:") and stored.lower() != sent:
            raise ServiceError(
                grpc.StatusCode.DATA_LOSS,
                f"registry {self.registry} stored manifest {stored[:80]} for {repository}:{reference}, not the "
                f"{sent} sent: the push did not land as sent",
            )

    def _location(self, answer: Answer) -> str:
        """The upload session's URL; on another host it gets no credential (_send), over http only if allowed."""
        location = answer.headers.get("Location")
        if not location:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, f"registry {self.registry} sent no upload location")
        return str(self.target(location, "an upload location", base=answer.url))


def describe(exc: BaseException) -> str:
    """An error in a message: its type and its own words (a TransferError's words say what broke)."""
    text = str(exc)[:300]
    if isinstance(exc, TransferError) or not text:
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def _reachable_url(text: str | httpx.URL, base: httpx.URL | None = None) -> httpx.URL:
    """`text` (relative to `base`) as a URL a connection can be opened to; ValueError saying why not (a
    bad port, an IP address that is none, a punycode label that does not decode), which would otherwise
    fail deep in httpx or the socket layer as an error no status maps."""
    try:
        url = base.join(text) if base is not None else httpx.URL(text)
        url.host  # reading it decodes a punycode host, which raises for a label that is none
    except (httpx.InvalidURL, UnicodeError) as exc:  # idna's errors are UnicodeErrors
        raise ValueError(f"not a valid URL: {exc}") from None
    if url.port is not None and not 0 < url.port <= MAX_PORT:  # connecting would raise OverflowError
        raise ValueError(f"the port must be 1 to {MAX_PORT}")
    return url


def _registry_url(text: str | httpx.URL, base: httpx.URL | None, what: str) -> httpx.URL:
    """A URL the registry gave; UNAVAILABLE naming it when none can be reached (the registry is broken)."""
    try:
        return _reachable_url(text, base)
    except ValueError as exc:
        raise ServiceError(grpc.StatusCode.UNAVAILABLE, f"{what} {str(text)[:200]!r}, which is unusable: {exc}") from None


def _base_url(host: str) -> str:
    """`https://host`; INVALID_ARGUMENT where no URL can reach `host`. A parsed reference never names such
    a host (names.py): this backs that up."""
    base = f"https://{host}"
    try:
        _reachable_url(base)
    except ValueError as exc:
        raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, f"registry {host!r} is not a valid host ({exc})") from None
    return base


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def _authority(url: httpx.URL) -> str:
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{host}:{url.port}" if url.port else host


def _registry_error(answer: Answer) -> str:
    """The registry's own error message (`{"errors": [{"code", "message"}]}`), if any."""
    if answer.oversized:
        return f" (with an error body over {limit_text(MAX_ERROR_BYTES)}, not read)"
    if encoded(answer.headers):
        return ""
    try:
        errors = json.loads(answer.body).get("errors") or []
    except (ValueError, AttributeError):
        return ""
    parts = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors if isinstance(e, dict)]
    return f" ({'; '.join(parts)[:500]})" if parts else ""


def _untrusted_certificate(exc: BaseException | None) -> bool:
    """TLS failed because the registry's certificate is not trusted (rather than no TLS at all)."""
    while exc is not None:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
