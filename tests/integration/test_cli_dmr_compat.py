"""What a demanding user of `docker model` and `ollama` hits first, against the stack `modelrunner up`
starts (real processes, free ports, the tiny GGUF packaged through the CLI): bytes that are not UTF-8,
a model named by its id, options `up` cannot start with, a registry that cannot be reached, and the
DMR routes' shapes and refusals. Every failure is one line on stderr with a non-zero exit, never a
traceback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

MODELRUNNER = str(Path(sys.executable).parent / "modelrunner")
TINY = "ai/tiny:v1"


class Cli:
    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "MODELRUNNER_HOST": self.url, "MODELRUNNER_DATA_DIR": str(data_dir),
                    "COLUMNS": "200", "MODELRUNNER_SHUTDOWN_GRACE": "5"}

    def __call__(self, *args: str | bytes, ok: bool = True, stdin: bytes = b"", timeout: float = 120,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run([MODELRUNNER, *args], env={**self.env, **(env or {})}, input=stdin,
                                capture_output=True, timeout=timeout)
        result.stdout = result.stdout.decode(errors="replace")
        result.stderr = result.stderr.decode(errors="replace")
        if ok:
            assert result.returncode == 0, f"modelrunner {args}: {result.stderr}"
        assert "Traceback" not in result.stderr, result.stderr
        return result


def one_line_failure(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()  # not stripped: an empty line above the error counts
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path) -> Iterator[Cli]:
    cli = Cli(tmp_path_factory.mktemp("stack"), free_port())
    up = cli("up", "--port", str(cli.port), "--grpc-base-port", "0", "--no-default-model", ok=False, timeout=200)
    try:
        assert up.returncode == 0, up.stderr + "\n" + (cli.data_dir / "logs" / "launcher.log").read_text()
        cli("package", str(tiny_gguf), TINY)
        yield cli
    finally:
        down = cli("down", ok=False, timeout=60)
        assert down.returncode == 0, down.stderr


def model_id(cli: Cli, name: str) -> str:
    return httpx.get(f"{cli.url}/models/{name}", timeout=30).json()["id"]


def test_run_answers_stdin_and_arguments_that_are_not_utf8(cli: Cli) -> None:
    """Bytes that are not UTF-8 (a binary file piped in, a Latin-1 terminal) once ended in a
    UnicodeEncodeError traceback while the request was built; they are sent as U+FFFD, as Go's CLIs do."""
    piped = cli("run", "--max-tokens", "4", TINY, stdin=b"caf\xe9 \xff\xfe and more\n")
    assert "not UTF-8" in piped.stderr
    strict = cli("run", "--max-tokens", "4", TINY, stdin=b"caf\xe9\n", env={"PYTHONIOENCODING": "utf-8:strict"})
    assert "not UTF-8" in strict.stderr
    cli("run", "--max-tokens", "4", TINY, b"caf\xe9 \xff")
    refused = cli("configure", TINY, "--runtime-flag", b"--\xff", ok=False)
    one_line_failure(refused, "unsupported runtime flag")


def test_run_by_model_id_chats_with_that_model(cli: Cli) -> None:
    """`ls` shows a 12-digit MODEL ID and `inspect` takes it; `run` with it once failed after finding
    the model, with "not in the store: pull it" (the chat route takes no ids)."""
    full = model_id(cli, TINY)
    for name in (full[7:19], full[7:], full):
        answer = cli("run", "--max-tokens", "4", name, "hi")
        assert "pulling" not in answer.stderr and answer.stdout.strip(), answer.stderr


def test_rm_of_a_model_with_several_tags_names_the_flag(cli: Cli) -> None:
    cli("tag", TINY, "ai/tiny:second")
    try:
        refused = cli("rm", model_id(cli, TINY)[7:19], ok=False)
        one_line_failure(refused, "--force")
    finally:
        cli("rm", "ai/tiny:second")


def test_run_refuses_a_negative_max_tokens_by_its_flag(cli: Cli) -> None:
    one_line_failure(cli("run", "--max-tokens", "-3", TINY, "hi", ok=False), "--max-tokens")


@pytest.mark.parametrize(("args", "needle"), [
    (["--port", "99999"], "--port 99999"),
    (["--port", "0"], "--port 0"),
    (["--grpc-base-port", "65534"], "--grpc-base-port 65534"),
    (["--port", "20001", "--grpc-base-port", "20000"], "one of the gRPC ports"),
    (["--log-level", "loud"], "--log-level"),
    (["--timeout", "0"], "--timeout"),
])
def test_up_refuses_options_it_cannot_start_with(tmp_path: Path, args: list[str], needle: str) -> None:
    """These once reached the detached launcher and came back as the end of its log: a traceback."""
    cli = Cli(tmp_path, free_port())
    base = ["up", "--no-default-model", "--port", str(cli.port), "--grpc-base-port", "0"]
    one_line_failure(cli(*base, *args, ok=False, timeout=60), needle)
    assert not (tmp_path / "run" / "stack.json").exists()


def test_up_refuses_a_data_directory_it_cannot_write(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    cli = Cli(not_a_dir, free_port())
    for foreground in ([], ["-f"]):
        up = cli("up", *foreground, "--no-default-model", "--port", str(cli.port), "--grpc-base-port", "0",
                 ok=False, timeout=60)
        one_line_failure(up, "data directory", str(not_a_dir))


def test_up_on_a_port_in_use_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cli = Cli(tmp_path, port)
        for foreground in ([], ["-f"]):
            up = cli("up", *foreground, "--no-default-model", "--port", str(port), "--grpc-base-port", "0",
                     ok=False, timeout=60)
            one_line_failure(up, f"port {port}", "in use")


def test_up_twice_names_the_running_stack(cli: Cli) -> None:
    again = cli("up", "--no-default-model", "--port", str(cli.port), "--grpc-base-port", "0", ok=False, timeout=60)
    one_line_failure(again, "already running", cli.url)


def test_an_unreachable_registry_is_502_and_one_line(cli: Cli) -> None:
    """The `docker model` CLI reads any 503 as "Docker Model Runner is not running"; a registry that
    refuses connections was one. And `pull` printed an empty line above its error."""
    remote = f"127.0.0.1:{free_port()}/test/absent:v1"
    started = time.monotonic()
    reply = httpx.post(f"{cli.url}/models/create", json={"from": remote}, headers={"Accept": "application/json"},
                       timeout=120)
    assert reply.status_code == 502, reply.text
    assert "unreachable" in reply.json()["error"]["message"]
    remote_inspect = httpx.get(f"{cli.url}/models/{remote}", params={"remote": "true"}, timeout=120)
    assert remote_inspect.status_code == 502, remote_inspect.text
    one_line_failure(cli("pull", remote, ok=False), "unreachable")
    print(f"\nunreachable registry refused in {time.monotonic() - started:.1f}s")


def test_tag_answers_in_dmr_shape_and_names_a_missing_repo(cli: Cli) -> None:
    tagged = httpx.post(f"{cli.url}/models/{TINY}/tag", params={"repo": "ai/tiny", "tag": "dmr"}, timeout=30)
    assert tagged.status_code == 201, tagged.text
    assert tagged.json()["target"] == "ai/tiny:dmr" and "ai/tiny:dmr" in tagged.json()["message"]
    assert "docker.io/ai/tiny:dmr" in tagged.json()["model"]["tags"]
    cli("rm", "ai/tiny:dmr")
    missing = httpx.post(f"{cli.url}/models/{TINY}/tag", params={"tag": "x"}, timeout=30)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "repo", missing.text


@pytest.mark.parametrize("body", [{}, {"from": ""}, {"from": "  "}])
def test_create_without_from_names_it(cli: Cli, body: dict) -> None:
    reply = httpx.post(f"{cli.url}/models/create", json=body, timeout=30)
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "from", reply.text


def test_configure_under_the_backend_name(cli: Cli) -> None:
    """DMR serves `POST /engines/{backend}/_configure` beside `/engines/_configure`; it was a 404."""
    reply = httpx.post(f"{cli.url}/engines/llama.cpp/_configure", json={"model": TINY, "context-size": 384},
                       timeout=30)
    assert reply.status_code == 202, reply.text
    settings = httpx.get(f"{cli.url}/engines/_configure", timeout=30).json()
    assert any(s["model"] == "docker.io/ai/tiny:v1" and s["context-size"] == 384 for s in settings), settings
    unknown = httpx.post(f"{cli.url}/engines/nosuch/_configure", json={"model": TINY, "context-size": 384},
                         timeout=30)
    assert unknown.status_code == 404
