"""Registry authentication: Basic, or the Bearer token flow (Docker Hub's), each only in answer to the
registry's 401 challenge (never up front: a registry that serves anonymous pulls never sees the
password). The client sends the header to the registry's own host only (registry.py); a token is asked
of the realm the challenge names, over TLS or a plain-HTTP host the operator allowed, its answer read
within a limit.

A token is asked for every scope the operation needs at once (`repository:<name>:pull,push` for a
push, plus `repository:<source>:pull` for cross-repository mounts), so a push never runs on a
pull-only token and a request body is never sent twice to learn that it needed a token.

An identity token (a credential helper's `<token>` user) is an OAuth2 refresh token: it is never sent
as Basic, and is exchanged for an access token by a POST to the realm (grant_type=refresh_token), as
the docker CLI does; a registry that only does Basic cannot take one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import grpc
import httpx
from oras.auth.utils import parse_auth_header

from modelrunner.common.errors import ServiceError
from modelrunner.distribution.bodies import MAX_ERROR_BYTES, BodyTooLarge, encoded, limit_text, read_body
from modelrunner.distribution.credentials import ENV_PASSWORD, ENV_USER, Credentials, env_suffix

TOKEN_MARGIN_S = 30
CLIENT_ID = "modelrunner"  # the OAuth2 client_id sent with an identity token
VISIBLE_ASCII = ("!", "~")  # the characters a token may have (RFC 6750's b64token is a subset)


def login_hint(registry: str) -> str:
    suffix = env_suffix(registry)
    return f"run `docker login {registry}`, or set {ENV_USER}_{suffix} and {ENV_PASSWORD}_{suffix}"


class RegistryAuth:
    """The Authorization header for one registry and one set of scopes; `target` parses and vets a realm's URL."""

    def __init__(
        self, registry: str, credentials: Credentials | None, scopes: list[str],
        target: Callable[[str, str], httpx.URL],
    ) -> None:
        self.registry = registry
        self.credentials = credentials
        self.scopes = scopes
        self.target = target
        self._token: str | None = None
        self._token_expiry = 0.0
        self._basic = False  # the registry challenged for Basic: send it from now on

    def header(self) -> dict[str, str]:
        if self._token and time.monotonic() < self._token_expiry:
            return {"Authorization": f"Bearer {self._token}"}
        if self._basic and self.credentials is not None:
            return {"Authorization": f"Basic {self.credentials.basic()}"}
        return {}

    async def answer(self, response: httpx.Response, http: httpx.AsyncClient) -> None:
        """Handles a 401: fetches a token for the challenge, or raises UNAUTHENTICATED."""
        challenge = response.headers.get("WWW-Authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme != "bearer":
            if self.credentials is None:
                raise ServiceError(
                    grpc.StatusCode.UNAUTHENTICATED, f"registry {self.registry} requires a login: {login_hint(self.registry)}"
                )
            if self.credentials.identity_token:
                raise ServiceError(
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"registry {self.registry} asks for Basic auth, which an identity token (the credential helper's "
                    f"`<token>` user) cannot answer: log in with a username and password "
                    f"(`docker login -u USER {self.registry}`), or set {ENV_USER} and {ENV_PASSWORD}",
                )
            if self._basic:
                raise ServiceError(
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"registry {self.registry} rejected the credentials of user {self.credentials.username!r}: "
                    f"{login_hint(self.registry)}",
                )
            self._basic = True
            return
        self._basic = False
        parsed = parse_auth_header(challenge)
        if not parsed.realm:
            raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, f"registry {self.registry} sent a token challenge without a realm")
        scopes = list(self.scopes)
        if parsed.scope:
            scopes += [s for s in parsed.scope.split(" ") if s not in scopes]
        params: list[tuple[str, str]] = [("scope", s) for s in scopes]
        if parsed.service:
            params.append(("service", parsed.service))
        realm = self.target(parsed.realm, "its token service")
        if self.credentials is not None and self.credentials.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": self.credentials.password,
                    "client_id": CLIENT_ID, "scope": " ".join(scopes)}
            if parsed.service:
                form["service"] = parsed.service
            request = http.build_request("POST", realm, data=form)
        else:
            headers = {"Authorization": f"Basic {self.credentials.basic()}"} if self.credentials else {}
            request = http.build_request("GET", realm, params=params, headers=headers)
        status, body = await self._token_answer(http, request)
        if status in (401, 403):
            who = self.credentials.who() if self.credentials else "anonymous access"
            raise ServiceError(
                grpc.StatusCode.UNAUTHENTICATED,
                f"registry {self.registry} refused a token to {who}: {login_hint(self.registry)}",
            )
        if status != 200:
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE, f"token service of registry {self.registry} answered HTTP {status}"
            )
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        token = (answer.get("token") or answer.get("access_token")) if isinstance(answer, dict) else None
        if not token or not isinstance(token, str):
            raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, f"token service of registry {self.registry} sent no token")
        if not all(VISIBLE_ASCII[0] <= c <= VISIBLE_ASCII[1] for c in token):
            # A header carries visible ASCII only: anything else would fail in httpx (a UnicodeEncodeError, a
            # LocalProtocolError for a CRLF) or, worse, smuggle a header in.
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE,
                f"token service of registry {self.registry} sent a token with characters no Authorization header "
                "can carry (only visible ASCII may be); it was not used",
            )
        self._token = token
        expires = answer.get("expires_in")
        self._token_expiry = time.monotonic() + max(60, expires if isinstance(expires, int) else 60) - TOKEN_MARGIN_S

    async def _token_answer(self, http: httpx.AsyncClient, request: httpx.Request) -> tuple[int, bytes]:
        """The token service's status and body, read within MAX_ERROR_BYTES and never decompressed."""
        where = f"token service of registry {self.registry}"
        try:
            response = await http.send(request, stream=True)
            try:
                if response.status_code != 200:
                    return response.status_code, b""
                if encoded(response.headers):
                    raise ServiceError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"{where} answered with Content-Encoding {encoded(response.headers)} although identity was "
                        "asked; it is not decompressed",
                    )
                return 200, await read_body(response, MAX_ERROR_BYTES, f"the answer of the {where}")
            finally:
                await response.aclose()
        except BodyTooLarge:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{where} answered with more than {limit_text(MAX_ERROR_BYTES)} (the limit for a token)",
            ) from None
        except httpx.TransportError as exc:
            cause = f"{type(exc).__name__}: {str(exc)[:300]}" if str(exc) else type(exc).__name__
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, f"{where} is unreachable ({cause})") from None
