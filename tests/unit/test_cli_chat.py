"""The chat REPL's input handling and conversation, and the Docker CLI plugin shim."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator

import httpx
import pytest

from modelrunner.cli import chat, docker_plugin
from modelrunner.cli.client import Gateway


def reader(lines: list[str]) -> Callable[[str], str]:
    it: Iterator[str] = iter(lines)

    def read(prompt: str) -> str:
        try:
            return next(it)
        except StopIteration:
            raise EOFError from None

    return read


def test_read_message_single_and_multi_line() -> None:
    assert chat.read_message(reader(["hello"])) == "hello"
    assert chat.read_message(reader(['"""one line"""'])) == "one line"
    assert chat.read_message(reader(['"""first', "second", 'third"""'])) == "first\nsecond\nthird"
    assert chat.read_message(reader(['"""', "body", '"""'])) == "body"


def test_repl_keeps_history_and_stops_at_bye() -> None:
    bodies: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.read())
        bodies.append(body)
        answer = f"answer {len(bodies)}"
        event = {"choices": [{"index": 0, "delta": {"content": answer}}]}
        return httpx.Response(200, content=f"data: {json.dumps(event)}\n\ndata: [DONE]\n\n".encode())

    out: list[str] = []
    gateway = Gateway("http://gw", transport=httpx.MockTransport(handler))
    chat.repl(gateway, "ai/gemma3", reader(["hi", "", "/?", '"""multi', 'line"""', "/bye", "never read"]), out.append)
    assert len(bodies) == 2
    assert bodies[1]["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "answer 1"},
        {"role": "user", "content": "multi\nline"},
    ]
    text = "".join(out)
    assert "answer 1" in text and "answer 2" in text and "/bye" in text


def test_repl_clear_forgets_and_eof_exits() -> None:
    bodies: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.read()))
        return httpx.Response(200, content=b'data: {"choices": [{"delta": {"content": "x"}}]}\n\ndata: [DONE]\n\n')

    gateway = Gateway("http://gw", transport=httpx.MockTransport(handler))
    chat.repl(gateway, "m", reader(["a", "/clear", "b"]), lambda s: None)
    assert bodies[1]["messages"] == [{"role": "user", "content": "b"}]


def test_repl_survives_a_failed_answer(capsys: pytest.CaptureFixture[str]) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.read()))
        if len(calls) == 1:
            return httpx.Response(503, json={"error": {"message": "runner is unavailable"}})
        return httpx.Response(200, content=b'data: {"choices": [{"delta": {"content": "ok"}}]}\n\ndata: [DONE]\n\n')

    gateway = Gateway("http://gw", transport=httpx.MockTransport(handler))
    chat.repl(gateway, "m", reader(["first", "second"]), lambda s: None)
    assert "runner is unavailable" in capsys.readouterr().err
    assert calls[1]["messages"] == [{"role": "user", "content": "second"}]  # the failed turn is not kept


def test_docker_plugin_shim(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    docker_plugin.install_docker_plugin()
    shim = tmp_path / "docker" / "cli-plugins" / "docker-model"
    assert os.access(shim, os.X_OK)
    meta = json.loads(subprocess.run([shim, "docker-cli-plugin-metadata"], capture_output=True, text=True, check=True).stdout)
    assert meta["SchemaVersion"] == "0.1.0" and meta["Vendor"] == "Model Runner" and meta["Version"]
    assert meta["ShortDescription"]
    # `docker model --version` runs `docker-model model --version`: the shim drops "model".
    version = subprocess.run([shim, "model", "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == docker_plugin.cli_version()
