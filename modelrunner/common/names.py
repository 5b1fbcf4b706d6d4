"""Model references: parsed and validated with the OCI distribution grammar before any use.

`ai/gemma3` means `docker.io/ai/gemma3:latest`, a name without a slash gets the `ai/` namespace (as
Docker Model Runner resolves it), and `host:port/ns/name:tag` and `@sha256:` digests work as with
images. No part of a name ever becomes a filesystem path: the Store addresses blobs by digest only.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import idna

DEFAULT_REGISTRY = "docker.io"
DEFAULT_NAMESPACE = "ai"
DEFAULT_TAG = "latest"
MAX_NAME_LENGTH = 255
MAX_PORT = 65535

# The grammar of github.com/distribution/reference (reference.go), anchored.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"sha256:[a-f0-9]{64}"
_IPV4_STYLE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$")  # what URL parsers read as an IPv4 address
_PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
_TAG_RE = re.compile(rf"^{_TAG}$")
DIGEST_RE = re.compile(rf"^{_DIGEST}$")


class InvalidReference(ValueError):
    """A name that is not a valid model reference; the message says what to fix."""


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """`registry/repository`, the part a tag or digest qualifies."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    @property
    def familiar(self) -> str:
        """The short form users type: `ai/gemma3:latest` for Docker Hub names."""
        out = self.repository if self.registry == DEFAULT_REGISTRY else self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag, None)


def is_digest(value: str) -> bool:
    return bool(DIGEST_RE.match(value))


def parse_reference(text: str, *, default_registry: str = DEFAULT_REGISTRY) -> Reference:
    """Parses and normalises a model name, raising InvalidReference with what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidReference("model name is empty")
    if len(text) > MAX_NAME_LENGTH:
        raise InvalidReference(f"model name is longer than {MAX_NAME_LENGTH} characters")
    if any(c in text for c in "\0\\") or any(ord(c) < 0x20 or c.isspace() for c in text):
        raise InvalidReference(f"model name {text!r} contains a control, space or backslash character")
    remainder, digest = text, None
    if "@" in remainder:
        remainder, digest = remainder.split("@", 1)
        if not DIGEST_RE.match(digest):
            raise InvalidReference(f"invalid digest {digest!r} in {text!r}: expected sha256: and 64 hex digits")
    tag = None
    last = remainder.rsplit("/", 1)[-1]
    if ":" in last:
        remainder, tag = remainder.rsplit(":", 1)
        if not _TAG_RE.match(tag):
            raise InvalidReference(f"invalid tag {tag!r} in {text!r}: use letters, digits, '_', '.', '-' (max 128)")
    parts = remainder.split("/", 1)
    if len(parts) == 2 and (("." in parts[0] or ":" in parts[0]) or parts[0] == "localhost"):
        registry, path = parts
        if not _DOMAIN_RE.match(registry):
            raise InvalidReference(f"invalid registry {registry!r} in {text!r}")
        _check_registry(registry, text)
    else:
        registry, path = default_registry, remainder
    if "/" not in remainder:
        path = f"{DEFAULT_NAMESPACE}/{path}"
    path = path.lower()
    if not _PATH_RE.match(path):
        raise InvalidReference(
            f"invalid repository {path!r} in {text!r}: use lowercase letters, digits and separators "
            "('.', '_', '-') between '/'-separated components"
        )
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(registry, path, tag, digest)


def _check_registry(registry: str, text: str) -> None:
    """What the grammar lets through but no URL can reach: a port outside 1-65535, an IP address that is
    none (`999.999.999.999`, `[1::2::3]`), a punycode label (`xn--...`) that does not decode."""
    host, port = registry, ""
    if not registry.endswith("]") and ":" in registry:
        host, port = registry.rsplit(":", 1)
    problem = _port_problem(port) or _host_problem(host)
    if problem:
        raise InvalidReference(f"invalid registry {registry!r} in {text!r}: {problem}")


def _port_problem(port: str) -> str | None:
    return f"the port must be 1 to {MAX_PORT}" if port and not 1 <= int(port) <= MAX_PORT else None


def _host_problem(host: str) -> str | None:
    """Checked as httpx reads a host: four dotted numbers are an IPv4 address, brackets an IPv6 one, and
    punycode is decoded (by idna, httpx's own dependency)."""
    try:
        if host.startswith("["):
            ipaddress.IPv6Address(host[1:-1])
        elif _IPV4_STYLE.match(host):
            ipaddress.IPv4Address(host)
    except ValueError as exc:
        return f"{host} is not an IP address ({exc})"
    for label in host.split("."):
        if label.lower().startswith("xn--"):
            try:
                idna.decode(label)
            except UnicodeError as exc:  # idna's errors are UnicodeErrors
                return f"{label!r} is not a valid punycode (xn--) label ({exc})"
    return None
