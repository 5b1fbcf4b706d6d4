"""`modelrunner requests`: what the gateway's request recorder kept, or each request live as it finishes."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Optional

import typer

from modelrunner.cli import client
from modelrunner.cli.client import CliError
from modelrunner.cli.models import JsonOpt, checked
from modelrunner.cli.output import print_json, table

COLUMNS = ["ID", "STARTED", "MODEL", "ROUTE", "STATUS", "TTFB", "DURATION", "TOKENS IN/OUT"]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _tokens(usage: dict) -> str:
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if prompt is None and completion is None:
        return "-"
    return f"{'-' if prompt is None else prompt}/{'-' if completion is None else completion}"


def row(record: dict) -> list[str]:
    status = str(record.get("status") or "-")
    if record.get("state") not in (None, "completed"):
        status += f" ({record['state']})"
    return [
        str(record.get("id", "")),
        time.strftime("%H:%M:%S", time.localtime(record.get("started_at") or 0)),
        record.get("model") or "-",
        f"{record.get('method', '')} {record.get('path', '')}",
        status,
        _ms(record.get("ttfb_ms")),
        _ms(record.get("duration_ms")),
        _tokens(record.get("usage") or {}),
    ]


def _follow(gateway: client.Gateway, params: dict, as_json: bool) -> None:
    """One line per request as it finishes (JSON lines with --json), until Ctrl-C."""
    with gateway.stream("GET", "/engines/requests/stream", params=params) as response:
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue  # keep-alive comments
            try:
                record = json.loads(line[5:])
            except ValueError:
                raise CliError("the gateway's request stream sent something that is not JSON") from None
            if as_json:
                sys.stdout.write(json.dumps(record) + "\n")
            else:
                sys.stdout.write("  ".join(row(record)) + "\n")
            sys.stdout.flush()


def requests(
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Print each new request as it finishes.")] = False,
    model: Annotated[Optional[str], typer.Option("--model", help="Only this model's requests.")] = None,
    include_existing: Annotated[
        bool, typer.Option("--include-existing", help="With --follow: print the kept requests first.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show the last requests to each model: route, status, timings, tokens (the request recorder)."""
    gateway = client.connect()
    params = {"model": checked(model)} if model else {}
    if include_existing and not follow:
        raise CliError("--include-existing only goes with --follow")
    if follow:
        try:
            _follow(gateway, {**params, "include_existing": str(include_existing).lower()}, as_json)
        except KeyboardInterrupt:
            pass
        return
    records = (gateway.json("GET", "/engines/requests", params=params) or {}).get("requests", [])
    if as_json:
        print_json(records)
        return
    table(COLUMNS, [row(r) for r in records])
