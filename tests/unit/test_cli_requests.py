"""`modelrunner requests` against a mock gateway: the query sent, the table, JSON, the followed stream."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.unit.test_cli_commands import Cli

RECORD = {
    "id": 7, "model": "ai/tiny:latest", "method": "POST", "path": "/v1/chat/completions", "state": "completed",
    "status": 200, "started_at": 1_700_000_000, "ttfb_ms": 12.4, "duration_ms": 40.2,
    "usage": {"prompt_tokens": 5, "completion_tokens": 8},
}
CANCELLED = {**RECORD, "id": 8, "state": "cancelled", "ttfb_ms": None, "usage": {"prompt_tokens": None,
                                                                                 "completion_tokens": None}}


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    monkeypatch.setenv("COLUMNS", "200")
    return Cli(monkeypatch, capsys)


def test_requests_prints_a_row_per_request(cli: Cli) -> None:
    cli.handler = lambda r: httpx.Response(200, json={"requests": [RECORD, CANCELLED]})
    code, out, _ = cli("requests", "--model", "ai/tiny")
    assert code == 0
    assert cli.requests[0].url.path == "/engines/requests" and cli.requests[0].url.params["model"] == "ai/tiny"
    header, first, second = out.splitlines()
    assert header.split() == ["ID", "STARTED", "MODEL", "ROUTE", "STATUS", "TTFB", "DURATION", "TOKENS", "IN/OUT"]
    assert "ai/tiny:latest" in first and "POST /v1/chat/completions" in first and "12 ms" in first
    assert "40 ms" in first and "5/8" in first
    assert "200 (cancelled)" in second


def test_requests_json_is_the_records(cli: Cli) -> None:
    cli.handler = lambda r: httpx.Response(200, json={"requests": [RECORD]})
    code, out, _ = cli("requests", "--json")
    assert code == 0 and json.loads(out) == [RECORD]


def test_follow_prints_each_event_and_skips_keepalives(cli: Cli) -> None:
    stream = f": keep-alive\n\ndata: {json.dumps(RECORD)}\n\n: keep-alive\n\ndata: {json.dumps(CANCELLED)}\n\n"
    cli.handler = lambda r: httpx.Response(200, text=stream, headers={"content-type": "text/event-stream"})
    code, out, _ = cli("requests", "-f", "--include-existing", "--json")
    assert code == 0
    assert cli.requests[0].url.path == "/engines/requests/stream"
    assert cli.requests[0].url.params["include_existing"] == "true"
    assert [json.loads(line)["id"] for line in out.splitlines()] == [7, 8]


def test_include_existing_needs_follow_and_errors_are_one_line(cli: Cli) -> None:
    code, _, err = cli("requests", "--include-existing")
    assert code == 1 and "--include-existing only goes with --follow" in err
    code, _, err = cli("requests", "--model", "Bad Name!")
    assert code == 1 and len(err.strip().splitlines()) == 1
