"""Registry authentication: Basic sent up front, or the Bearer token flow (Docker Hub's).

A token is asked for every scope the operation needs at once (`repository:<name>:pull,push` for a
push, plus `repository:<source>:pull` for cross-repository mounts), so a push never runs on a
pull-only token and a request body is never sent twice to learn that it needed a token.

An identity token (a credential helper's `<token>` user) is an OAuth2 refresh token: it is never sent
as Basic, and is exchanged for an access token by a POST to the realm (grant_type=refresh_token), as
the docker CLI does; a registry that only does Basic cannot take one.
"""

from __future__ import annotations

import time

import grpc
import httpx
from oras.auth.utils import parse_auth_header

from modelrunner.common.errors import ServiceError
from modelrunner.distribution.credentials import ENV_PASSWORD, ENV_USER, Credentials

TOKEN_MARGIN_S = 30
CLIENT_ID = "modelrunner"  # the OAuth2 client_id sent with an identity token


def login_hint(registry: str) -> str:
    return f"run `docker login {registry}`, or set {ENV_USER} and {ENV_PASSWORD}"


class RegistryAuth:
    """The Authorization header for one registry and one set of scopes."""

    def __init__(self, registry: str, credentials: Credentials | None, scopes: list[str]) -> None:
        self.registry = registry
        self.credentials = credentials
        self.scopes = scopes
        self._token: str | None = None
        self._token_expiry = 0.0
        self._bearer = False  # the registry asked for tokens: stop sending Basic

    def header(self) -> dict[str, str]:
        if self._token and time.monotonic() < self._token_expiry:
            return {"Authorization": f"Bearer {self._token}"}
        if self.credentials is not None and not self._bearer and not self.credentials.identity_token:
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
            raise ServiceError(
                grpc.StatusCode.UNAUTHENTICATED,
                f"registry {self.registry} rejected the credentials of user {self.credentials.username!r}: "
                f"{login_hint(self.registry)}",
            )
        self._bearer = True
        parsed = parse_auth_header(challenge)
        if not parsed.realm:
            raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, f"registry {self.registry} sent a token challenge without a realm")
        scopes = list(self.scopes)
        if parsed.scope:
            scopes += [s for s in parsed.scope.split(" ") if s not in scopes]
        params: list[tuple[str, str]] = [("scope", s) for s in scopes]
        if parsed.service:
            params.append(("service", parsed.service))
        try:
            if self.credentials is not None and self.credentials.identity_token:
                form = {"grant_type": "refresh_token", "refresh_token": self.credentials.password,
                        "client_id": CLIENT_ID, "scope": " ".join(scopes)}
                if parsed.service:
                    form["service"] = parsed.service
                reply = await http.post(parsed.realm, data=form)
            else:
                headers = {"Authorization": f"Basic {self.credentials.basic()}"} if self.credentials else {}
                reply = await http.get(parsed.realm, params=params, headers=headers)
        except httpx.TransportError as exc:
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE, f"token service of registry {self.registry} is unreachable: {type(exc).__name__}"
            ) from None
        if reply.status_code in (401, 403):
            who = self.credentials.who() if self.credentials else "anonymous access"
            raise ServiceError(
                grpc.StatusCode.UNAUTHENTICATED,
                f"registry {self.registry} refused a token to {who}: {login_hint(self.registry)}",
            )
        if reply.status_code != 200:
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE, f"token service of registry {self.registry} answered HTTP {reply.status_code}"
            )
        body = reply.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, f"token service of registry {self.registry} sent no token")
        self._token = token
        self._token_expiry = time.monotonic() + max(60, int(body.get("expires_in") or 60)) - TOKEN_MARGIN_S
