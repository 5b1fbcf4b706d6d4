"""How the CLI prints: rich tables for people, plain JSON for scripts, one-line errors on stderr."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from modelrunner.common.names import InvalidReference, parse_reference

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    """Plain JSON on stdout (no colour, no wrapping), so `--json` output parses."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


def error(message: str) -> None:
    err_console.print(f"[red]error:[/red] {message}", markup=True, soft_wrap=True)


def table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in columns:
        t.add_column(column, no_wrap=True, overflow="fold")
    for row in rows:
        t.add_row(*row)
    # Never crop a name or id to fit the terminal (or the 80 columns of a pipe): scripts grep these.
    natural = console.measure(t, options=console.options.update_width(1 << 16)).maximum
    wide = Console(highlight=False, width=max(console.width, natural), force_terminal=console.is_terminal)
    wide.print(t, markup=False)


def human_size(n: float | int | None) -> str:
    """Bytes in decimal units, as Docker prints them ("253.36 MB")."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1000
    return f"{value:.2f} TB"


def ago(ts: float | int | None, now: float | None = None) -> str:
    """A unix time as "3 days ago"."""
    if not ts:
        return "-"
    delta = (now if now is not None else time.time()) - float(ts)
    if delta < 0:
        return "just now"
    for seconds, unit in ((86400 * 365, "year"), (86400 * 30, "month"), (86400 * 7, "week"),
                          (86400, "day"), (3600, "hour"), (60, "minute")):
        if delta >= seconds:
            n = int(delta // seconds)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "less than a minute ago"


def until(ts: float | int | None, now: float | None = None) -> str:
    """A future unix time as "in 4 minutes"; 0 means never."""
    if not ts:
        return "never"
    delta = float(ts) - (now if now is not None else time.time())
    if delta <= 0:
        return "now"
    if delta < 60:
        return f"in {int(delta)} seconds"
    if delta < 3600:
        return f"in {int(delta // 60)} minutes"
    return f"in {delta / 3600:.1f} hours"


def short_id(model_id: str) -> str:
    """"sha256:0123456789abcdef..." -> "0123456789ab", as `docker images` shows ids."""
    return model_id.split(":", 1)[-1][:12] if model_id else "-"


def familiar(tag: str) -> str:
    """A fully qualified tag as users type it ("docker.io/ai/gemma3:latest" -> "ai/gemma3:latest")."""
    try:
        return parse_reference(tag).familiar
    except InvalidReference:
        return tag
