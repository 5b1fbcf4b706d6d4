"""Registry credentials: MODELRUNNER_REGISTRY_USERNAME/PASSWORD, else ~/.docker/config.json `auths`.

A per-registry pair wins over the global one: MODELRUNNER_REGISTRY_USERNAME_<HOST> where <HOST> is
the registry with every character other than a letter or digit turned into `_`, upper-cased
(`127.0.0.1:5000` -> `MODELRUNNER_REGISTRY_USERNAME_127_0_0_1_5000`). The Docker config is read from
$DOCKER_CONFIG/config.json when DOCKER_CONFIG is set (as the docker CLI does; oras-py ignores it).
Credential helpers (`credsStore`) are not run: use `auths` or the variables.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

ENV_USER = "MODELRUNNER_REGISTRY_USERNAME"
ENV_PASSWORD = "MODELRUNNER_REGISTRY_PASSWORD"
DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io", "docker.io")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never print a secret, even in a traceback's locals
        return f"Credentials(username={self.username!r}, password=***)"

    def basic(self) -> str:
        return base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def _env_suffix(registry: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", registry).upper()


def from_env(registry: str, env: dict[str, str] | None = None) -> Credentials | None:
    env = os.environ if env is None else env
    suffix = _env_suffix(registry)
    for user_key, pass_key in ((f"{ENV_USER}_{suffix}", f"{ENV_PASSWORD}_{suffix}"), (ENV_USER, ENV_PASSWORD)):
        if env.get(user_key) and env.get(pass_key):
            return Credentials(env[user_key], env[pass_key])
    return None


def docker_config_path(env: dict[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("DOCKER_CONFIG")
    return Path(base, "config.json") if base else Path.home() / ".docker" / "config.json"


def _strip_scheme(key: str) -> str:
    return re.sub(r"^https?://", "", key).rstrip("/").removesuffix("/v1").removesuffix("/v2")


def from_docker_config(registry: str, path: Path) -> Credentials | None:
    try:
        auths = json.loads(path.read_text()).get("auths", {})
    except (OSError, ValueError):
        return None
    wanted = DOCKER_HUB_KEYS if registry == "docker.io" else (registry,)
    for key, entry in auths.items():
        if key not in wanted and _strip_scheme(key) not in wanted or not isinstance(entry, dict):
            continue
        if entry.get("username") and entry.get("password"):
            return Credentials(entry["username"], entry["password"])
        if entry.get("auth"):
            try:
                username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                continue
            if username and password:
                return Credentials(username, password)
    return None


def lookup(registry: str) -> Credentials | None:
    """The credentials for `registry`, or None to go anonymous."""
    return from_env(registry) or from_docker_config(registry, docker_config_path())
