"""keep_alive, the time a model stays loaded after its last request: one grammar for the gateway, which
refuses a bad value before any model loads, and the Runner, which gRPC callers reach directly."""

from __future__ import annotations

import math
import re

FOREVER = None  # keep-alive that never expires
# The longest finite keep-alive: a longer one is a mistake ("-1" is forever), and its expiry may be past what
# a datetime holds (/api/ps shows it as one).
MAX_KEEP_ALIVE_S = 10 * 365 * 24 * 3600
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_keep_alive(text: str) -> float | None:
    """Seconds from "5m", "1h30m", "30s", "300" (seconds), "0", at most MAX_KEEP_ALIVE_S (10 years); None
    (forever) for any negative value."""
    seconds = _seconds(text)
    if seconds > MAX_KEEP_ALIVE_S:
        raise ValueError(
            f"invalid keep_alive {text!r}: at most {MAX_KEEP_ALIVE_S} seconds (10 years); '-1' keeps "
            "the model loaded forever"
        )
    return FOREVER if seconds < 0 else seconds


def clamp_keep_alive(text: str) -> str:
    """`text`, or the longest keep-alive where it asks for more: an older version saved such values, meaning
    "stay loaded". Raises ValueError as parse_keep_alive does for what is no keep-alive at all."""
    return str(MAX_KEEP_ALIVE_S) if _seconds(text) > MAX_KEEP_ALIVE_S else text


def _seconds(text: str) -> float:
    """The finite seconds `text` says, unbounded (negative: forever)."""
    value = text.strip()
    if not value:
        raise ValueError("keep_alive is empty")
    try:
        seconds = float(value)
    except ValueError:
        sign = -1.0 if value.startswith("-") else 1.0
        body = value.lstrip("+-")
        parts = _DURATION_RE.findall(body)
        if not parts or "".join(n + u for n, u in parts) != body:
            raise ValueError(
                f"invalid keep_alive {text!r}: use a duration like '30s', '5m', '1h30m', '0' or '-1' (forever)"
            ) from None
        seconds = sign * sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(seconds):  # float() takes "nan" and "inf"
        raise ValueError(f"invalid keep_alive {text!r}: give a finite number of seconds ('-1' is forever)")
    return seconds
