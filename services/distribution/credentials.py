"""Registry credentials, looked up per registry host in the docker CLI's order. A credential belongs to
one registry host (host[:port]) and is never offered to another:

1. MODELRUNNER_REGISTRY_USERNAME_<HOST>/MODELRUNNER_REGISTRY_PASSWORD_<HOST>, where <HOST> is the
   registry with every character other than a letter or digit turned into `_`, upper-cased
   (`127.0.0.1:5000` -> `MODELRUNNER_REGISTRY_USERNAME_127_0_0_1_5000`). The plain pair
   MODELRUNNER_REGISTRY_USERNAME/PASSWORD counts only together with MODELRUNNER_REGISTRY_HOST, the host
   it is for: without it, a pull names the registry and would get the password (a pull of
   evil.example/x once did). Set without the host, it is an error (FAILED_PRECONDITION) that says so.
2. The Docker config ($DOCKER_CONFIG/config.json when DOCKER_CONFIG is set, as the docker CLI does,
   else ~/.docker/config.json): the credential helper of `credHelpers[host]`, else of `credsStore`
   (`docker-credential-<name> get` on PATH, the docker-credential-helpers protocol; Docker Hub is
   asked for as `https://index.docker.io/v1/`), else the `auths` entry of the host. A helper that
   has no credentials for the host ("credentials not found") falls through to `auths`, then anonymous.

A configured helper that is not on PATH, times out, fails or answers what is not its JSON is an error
(CredentialHelperError, FAILED_PRECONDITION) naming the helper and the config file: the user set it
up, so going anonymous would hide the cause. An identity token (a helper's Username `<token>`) is
exchanged at the registry's token service (auth.py). Secrets are never logged nor shown in a repr.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import grpc

from modelrunner.common.errors import ServiceError

ENV_USER = "MODELRUNNER_REGISTRY_USERNAME"
ENV_PASSWORD = "MODELRUNNER_REGISTRY_PASSWORD"
ENV_HOST = "MODELRUNNER_REGISTRY_HOST"  # the one registry the plain pair is for
DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io", "docker.io")
DOCKER_HUB_SERVER_URL = DOCKER_HUB_KEYS[0]  # what the docker CLI asks helpers for, for Docker Hub
HELPER_PREFIX = "docker-credential-"
HELPER_TIMEOUT_S = 10.0
IDENTITY_TOKEN_USER = "<token>"  # a helper's Username when its Secret is an identity (refresh) token


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never print a secret, even in a traceback's locals
        return f"Credentials(username={self.username!r}, password=***)"

    @property
    def identity_token(self) -> bool:
        """The password is an OAuth2 refresh token (`docker login` to a registry that issues them)."""
        return self.username == IDENTITY_TOKEN_USER

    def who(self) -> str:
        return "an identity token" if self.identity_token else f"user {self.username!r}"

    def basic(self) -> str:
        return base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


class CredentialHelperError(ServiceError):
    """A configured credential helper could not answer: what to fix is in the message."""

    def __init__(self, message: str) -> None:
        super().__init__(grpc.StatusCode.FAILED_PRECONDITION, message)


def env_suffix(registry: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", registry).upper()


def same_registry(a: str, b: str) -> bool:
    """Whether two spellings name one registry host (Docker Hub has several)."""
    a, b = _strip_scheme(a.strip()).lower(), _strip_scheme(b.strip()).lower()
    hub = {_strip_scheme(k) for k in DOCKER_HUB_KEYS}
    return a == b or (a in hub and b in hub)


def from_env(registry: str, env: dict[str, str] | None = None) -> Credentials | None:
    """The per-host pair of `registry`, else the plain pair when MODELRUNNER_REGISTRY_HOST names it."""
    env = os.environ if env is None else env
    suffix = env_suffix(registry)
    user_key, pass_key = f"{ENV_USER}_{suffix}", f"{ENV_PASSWORD}_{suffix}"
    if env.get(user_key) and env.get(pass_key):
        return Credentials(env[user_key], env[pass_key])
    if not (env.get(ENV_USER) and env.get(ENV_PASSWORD)):
        return None
    host = env.get(ENV_HOST, "")
    if not host.strip():
        raise ServiceError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"{ENV_USER} and {ENV_PASSWORD} are set without {ENV_HOST}: set {ENV_HOST} to the registry they "
            f"are for (host[:port], e.g. {registry}), or use {ENV_USER}_{suffix} and {ENV_PASSWORD}_{suffix}; "
            "a password is never sent to a registry it was not given for"
        )
    return Credentials(env[ENV_USER], env[ENV_PASSWORD]) if same_registry(host, registry) else None


def docker_config_path(env: dict[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("DOCKER_CONFIG")
    return Path(base, "config.json") if base else Path.home() / ".docker" / "config.json"


def _strip_scheme(key: str) -> str:
    return re.sub(r"^https?://", "", key).rstrip("/").removesuffix("/v1").removesuffix("/v2")


def _read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _entry(section: object, registry: str) -> object:
    """The value of `section` (a dict keyed by registry, with or without scheme) for `registry`."""
    if not isinstance(section, dict):
        return None
    wanted = DOCKER_HUB_KEYS if registry == "docker.io" else (registry,)
    for key, value in section.items():
        if key in wanted or _strip_scheme(key) in wanted:
            return value
    return None


def _from_auths(registry: str, config: dict) -> Credentials | None:
    entry = _entry(config.get("auths"), registry)
    if not isinstance(entry, dict):
        return None
    if entry.get("username") and entry.get("password"):
        return Credentials(entry["username"], entry["password"])
    if entry.get("auth"):
        try:
            username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if username and password:
            return Credentials(username, password)
    return None


def helper_for(registry: str, config: dict) -> tuple[str, str] | None:
    """(helper name, the config key naming it) for `registry`: `credHelpers[host]`, else `credsStore`."""
    name = _entry(config.get("credHelpers"), registry)
    if isinstance(name, str) and name:
        return name, "credHelpers"
    name = config.get("credsStore")
    if isinstance(name, str) and name:
        return name, "credsStore"
    return None


def server_url(registry: str) -> str:
    """What the docker CLI writes to a helper's stdin for `registry`."""
    return DOCKER_HUB_SERVER_URL if registry == "docker.io" else registry


def from_helper(
    helper: str, registry: str, config_path: Path, key: str = "credsStore", timeout: float = HELPER_TIMEOUT_S
) -> Credentials | None:
    """`docker-credential-<helper> get` for `registry`: its credentials, None when it has none."""
    program = HELPER_PREFIX + helper
    where = f"credential helper {program} ({key} in {config_path})"
    fix = (f"fix it, or remove {key} from that file, or set {ENV_USER}_{env_suffix(registry)} and "
           f"{ENV_PASSWORD}_{env_suffix(registry)}")
    try:
        done = subprocess.run(
            [program, "get"], input=server_url(registry).encode(), capture_output=True, timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise CredentialHelperError(f"{where} is not on PATH: install it, or {fix}") from None
    except PermissionError:
        raise CredentialHelperError(f"{where} is not executable: {fix}") from None
    except subprocess.TimeoutExpired:
        raise CredentialHelperError(
            f"{where} did not answer within {timeout:g} s for {server_url(registry)} (is it waiting for an unlock "
            f"prompt?): {fix}"
        ) from None
    stdout = done.stdout.decode(errors="replace").strip()
    if done.returncode != 0:
        if "credentials not found" in stdout.lower():
            return None
        said = (done.stderr.decode(errors="replace").strip() or ("" if stdout.startswith("{") else stdout)).splitlines()
        detail = f": {said[0][:200]}" if said else ""
        raise CredentialHelperError(f"{where} failed with exit status {done.returncode}{detail}; {fix}")
    try:
        answer = json.loads(stdout)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not isinstance(answer.get("Username"), str) or not isinstance(answer.get("Secret"), str):
        raise CredentialHelperError(
            f"{where} answered what is not its JSON ({{\"Username\": ..., \"Secret\": ...}}) for {server_url(registry)}: {fix}"
        )
    if not answer["Username"] or not answer["Secret"]:
        return None
    return Credentials(answer["Username"], answer["Secret"])


def lookup(registry: str) -> Credentials | None:
    """The credentials for `registry`, or None to go anonymous. May run a credential helper: blocking,
    for up to HELPER_TIMEOUT_S; call it off the event loop (Context.login)."""
    found = from_env(registry)
    if found is not None:
        return found
    path = docker_config_path()
    config = _read_config(path)
    helper = helper_for(registry, config)
    if helper is not None:
        found = from_helper(helper[0], registry, path, helper[1])
    return found or _from_auths(registry, config)
