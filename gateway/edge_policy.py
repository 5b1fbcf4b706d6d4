"""Who may talk to the gateway from a browser: the Host and Origin rules (as Ollama guards its local API).

A web page can make the browser send simple requests to 127.0.0.1, and after DNS rebinding its own
origin resolves there: the Origin header names the page, the Host header the name the browser dialed.
IP literals and `localhost` names cannot be rebound, so they are always good Hosts; a name is good only
when it is this machine's or the operator listed it.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from functools import cache
from urllib.parse import urlsplit


_PORT = re.compile(r"[0-9]*")  # none, or ASCII digits


def split_host(authority: str) -> tuple[str, str]:
    """"Example.COM:8080" -> ("example.com", "8080"); "[::1]:1" -> ("::1", "1"); no port -> ""."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        return host, rest.removeprefix(":")
    host, _, port = authority.partition(":") if authority.count(":") == 1 else (authority, "", "")
    return host.rstrip("."), port


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback_listen(address: str) -> bool:
    """Whether `host:port` (HTTP_LISTEN) binds loopback only."""
    host, _, _ = address.rpartition(":")
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@cache
def machine_names() -> frozenset[str]:
    """This machine's host name, lowercased (as the OS says it: no DNS lookup on a request's path)."""
    name = socket.gethostname().lower().rstrip(".")
    return frozenset({name} if name else ())


def host_allowed(authority: str, extra: frozenset[str]) -> bool:
    """Whether a Host is a good one; its port must be digits ("localhost:1,evil.example" is not)."""
    host, port = split_host(authority)
    if not host or not _PORT.fullmatch(port):
        return False
    return (
        _is_ip(host)
        or host == "localhost"
        or host.endswith(".localhost")
        or host in machine_names()
        or host in extra
    )


def origin_allowed(origin: str, authority: str, configured: frozenset[str], hosts: frozenset[str]) -> bool:
    """An Origin is allowed when configured (or '*' is), or when it is the stack's own: the page was
    served from the very host and port the request goes to (the web UI), and that Host is a good one
    (see host_allowed, with the operator's `hosts`)."""
    if "*" in configured or origin.lower().rstrip("/") in configured:
        return True
    parts = urlsplit(origin.lower())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False  # "null" (sandboxed frames, file://) and app schemes need configuring
    return split_host(parts.netloc) == split_host(authority) and host_allowed(authority, hosts)


def normalize_origins(origins: list[str]) -> frozenset[str]:
    return frozenset(o.lower().rstrip("/") for o in origins)


def normalize_hosts(hosts: list[str]) -> frozenset[str]:
    """Configured host names, lowercased, without a port (any port of a listed name is good)."""
    return frozenset(split_host(h)[0] for h in hosts)
