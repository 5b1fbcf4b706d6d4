"""CLI commands against a mock gateway (httpx.MockTransport): requests sent, output, exit codes."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable

import httpx
import pytest

from modelrunner.cli import client
from modelrunner.cli.main import main

GEMMA = {
    "id": "sha256:" + "ab" * 32,
    "tags": ["docker.io/ai/gemma3:latest", "docker.io/ai/gemma3:270M-Q4_K_M"],
    "created": 1_700_000_000,
    "config": {"format": "gguf", "quantization": "Q4_K_M", "parameters": "268.10 M", "architecture": "gemma3",
               "size": "253.36 MB", "context_size": 32768},
    "size": 253_360_000,
}


class Cli:
    """Runs `modelrunner ARGS` in-process against `handler`; records the requests."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        self.monkeypatch = monkeypatch
        self.capsys = capsys
        self.requests: list[httpx.Request] = []
        self.handler: Callable[[httpx.Request], httpx.Response] = lambda r: httpx.Response(404)
        monkeypatch.setattr(client, "connect", self._connect)

    def _connect(self) -> client.Gateway:
        def record(request: httpx.Request) -> httpx.Response:
            request.read()
            self.requests.append(request)
            return self.handler(request)

        return client.Gateway("http://gw", transport=httpx.MockTransport(record))

    def __call__(self, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
        self.monkeypatch.setattr(sys, "argv", ["modelrunner", *args])
        if stdin is not None:
            import io

            self.monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    monkeypatch.setenv("COLUMNS", "200")
    return Cli(monkeypatch, capsys)


def openai_error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": message, "type": "x", "param": None, "code": None}})


def test_ls_table_has_a_row_per_tag(cli: Cli) -> None:
    cli.handler = lambda r: httpx.Response(200, json=[GEMMA])
    code, out, _ = cli("ls")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["MODEL", "NAME", "PARAMETERS", "QUANTIZATION", "ARCHITECTURE", "MODEL", "ID", "CREATED", "SIZE"]
    assert "ai/gemma3:latest" in lines[1] and "ai/gemma3:270M-Q4_K_M" in lines[2]
    assert "abababababab" in lines[1] and "253.36 MB" in lines[1] and "268.10 M" in lines[1]
    # columns are aligned: the id starts at the same offset on every row
    assert lines[1].index("abababababab") == lines[2].index("abababababab")


def test_ls_json_and_quiet(cli: Cli) -> None:
    cli.handler = lambda r: httpx.Response(200, json=[GEMMA])
    code, out, _ = cli("ls", "--json")
    assert code == 0 and json.loads(out) == [GEMMA]
    code, out, _ = cli("ls", "-q")
    assert code == 0 and out.split() == [GEMMA["id"]]


def test_stack_down_says_how_to_start_it(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import free_port

    monkeypatch.setenv("MODELRUNNER_HOST", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setattr(sys, "argv", ["modelrunner", "ls"])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 1
    assert "modelrunner up" in err and len(err.strip().splitlines()) == 1


def test_bad_name_fails_before_any_request(cli: Cli) -> None:
    code, _, err = cli("pull", "Not A/Valid Name")
    assert code == 1 and "model name" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("inspect", "ai/UPPER::x")
    assert code == 1 and "invalid" in err
    assert cli.requests == []


def test_unknown_model_is_one_line_from_the_gateway(cli: Cli) -> None:
    cli.handler = lambda r: openai_error(404, "model ai/nope:latest not found")
    code, out, err = cli("inspect", "ai/nope")
    assert code == 1 and out == ""
    assert err.strip() == "error: model ai/nope:latest not found"


def test_inspect_prints_json_and_asks_the_registry_with_remote(cli: Cli) -> None:
    cli.handler = lambda r: httpx.Response(200, json=GEMMA)
    code, out, _ = cli("inspect", "ai/gemma3")
    assert code == 0 and json.loads(out)["id"] == GEMMA["id"]
    assert cli.requests[-1].url.path == "/models/ai/gemma3"
    cli("inspect", "--remote", "ai/gemma3")
    assert cli.requests[-1].url.params["remote"] == "true"


def test_rm_several_reports_each_and_fails_when_one_fails(cli: Cli) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/nope"):
            return openai_error(404, "model ai/nope:latest not found")
        return httpx.Response(200, json=[{"Untagged": "ai/gemma3:latest"}, {"Deleted": GEMMA["id"]}])

    cli.handler = handler
    code, out, err = cli("rm", "--force", "ai/gemma3", "ai/nope")
    assert code == 1
    assert "Untagged: ai/gemma3:latest" in out and f"Deleted: {GEMMA['id']}" in out
    assert "ai/nope: model ai/nope:latest not found" in err
    assert [r.method for r in cli.requests] == ["DELETE", "DELETE"]
    assert cli.requests[0].url.params["force"] == "true"


def test_tag_sends_repo_and_tag(cli: Cli) -> None:
    cli.handler = lambda r: httpx.Response(201)
    code, out, _ = cli("tag", "ai/gemma3", "localhost:5000/team/gemma:v1")
    assert code == 0 and "localhost:5000/team/gemma:v1" in out
    request = cli.requests[0]
    assert request.url.path == "/models/ai/gemma3/tag"
    assert dict(request.url.params) == {"repo": "localhost:5000/team/gemma", "tag": "v1"}


def test_package_uploads_the_files_then_names_their_blobs(cli: Cli, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    (tmp_path / "LICENSE").write_text("MIT")
    monkeypatch.chdir(tmp_path)
    cli.handler = lambda r: httpx.Response(201 if r.method == "PUT" else 200, json=GEMMA)
    code, out, err = cli("package", "m.gguf", "--license", "LICENSE", "--context-size", "2048", "ai/mine:v1")
    assert code == 0, err
    digests = {name: "sha256:" + hashlib.sha256(data).hexdigest() for name, data in (("m.gguf", b"GGUF"), ("LICENSE", b"MIT"))}
    uploads = [(r.url.path, r.content) for r in cli.requests if r.method == "PUT"]
    assert uploads == [(f"/models/blobs/{digests['m.gguf']}", b"GGUF"), (f"/models/blobs/{digests['LICENSE']}", b"MIT")]
    body = json.loads(cli.requests[-1].content)
    assert cli.requests[-1].url.path == "/models/package"
    assert body == {"gguf": [{"digest": digests["m.gguf"], "name": "m.gguf"}], "name": "ai/mine:v1",
                    "license": {"digest": digests["LICENSE"], "name": "LICENSE"}, "context_size": 2048}
    assert str(tmp_path) not in cli.requests[-1].content.decode()  # no client path reaches the server
    code, _, err = cli("package", "missing.gguf", "ai/mine:v1")
    assert code == 1 and "missing.gguf: no such file" in err


def test_package_uploads_every_shard_in_order(cli: Cli, tmp_path) -> None:
    shards = [tmp_path / f"m-0000{i}-of-00002.gguf" for i in (1, 2)]
    for i, shard in enumerate(shards):
        shard.write_bytes(b"GGUF" + bytes([i]))
    cli.handler = lambda r: httpx.Response(201 if r.method == "PUT" else 200, json=GEMMA)
    code, _, err = cli("package", str(shards[0]), "ai/sharded:v1")
    assert code == 0, err
    body = json.loads(cli.requests[-1].content)
    assert [f["name"] for f in body["gguf"]] == [s.name for s in shards]
    assert [r.method for r in cli.requests] == ["PUT", "PUT", "POST"]
    shards[1].unlink()
    code, _, err = cli("package", str(shards[0]), "ai/sharded:v1")
    assert code == 1 and "shards missing" in err


def progress_lines(*messages: dict) -> httpx.Response:
    return httpx.Response(200, content="".join(json.dumps(m) + "\n" for m in messages).encode())


def test_pull_renders_progress_and_succeeds(cli: Cli) -> None:
    layer = "sha256:" + "cd" * 32
    cli.handler = lambda r: progress_lines(
        {"type": "progress", "message": "Downloaded 1 MB", "total": 2000, "layer": {"id": layer, "size": 2000, "current": 1000}, "mode": "pull"},
        {"type": "progress", "message": "Downloaded 2 MB", "total": 2000, "layer": {"id": layer, "size": 2000, "current": 2000}, "mode": "pull"},
        {"type": "success", "message": "Model pulled successfully", "model_id": GEMMA["id"]},
    )
    code, out, err = cli("pull", "ai/gemma3")
    assert code == 0
    assert "Model pulled successfully" in out
    assert "cdcdcdcdcdcd" in err  # the layer's bar
    request = cli.requests[0]
    assert request.url.path == "/models/create" and json.loads(request.content) == {"from": "ai/gemma3"}
    assert request.headers["accept"] == "application/json"


def test_pull_error_line_fails(cli: Cli) -> None:
    cli.handler = lambda r: progress_lines({"type": "error", "message": "registry said: manifest unknown"})
    code, _, err = cli("pull", "ai/nope")
    assert code == 1 and "manifest unknown" in err


def test_pull_stream_cut_short_says_to_resume(cli: Cli) -> None:
    cli.handler = lambda r: progress_lines({"type": "progress", "total": 10, "layer": {"id": "sha256:1", "size": 10, "current": 5}})
    code, _, err = cli("pull", "ai/gemma3")
    assert code == 1 and "again to resume" in err


def sse(*deltas: str) -> httpx.Response:
    events = [{"choices": [{"index": 0, "delta": {"content": d}, "finish_reason": None}]} for d in deltas]
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return httpx.Response(200, content=body.encode(), headers={"content-type": "text/event-stream"})


def test_run_one_shot_streams_the_answer(cli: Cli) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/chat/completions":
            return sse("Hel", "lo", "!")
        return httpx.Response(200, json=GEMMA)

    cli.handler = handler
    code, out, _ = cli("run", "ai/gemma3", "Say hi", stdin="")
    assert code == 0 and out == "Hello!\n"
    body = json.loads(cli.requests[-1].content)
    assert body["stream"] is True and body["messages"] == [{"role": "user", "content": "Say hi"}]


def test_run_reads_piped_stdin(cli: Cli) -> None:
    cli.handler = lambda r: sse("ok") if r.url.path.startswith("/v1") else httpx.Response(200, json=GEMMA)
    code, out, _ = cli("run", "ai/gemma3", "Summarize:", stdin="a long text\n")
    assert code == 0 and out == "ok\n"
    assert json.loads(cli.requests[-1].content)["messages"][0]["content"] == "Summarize:\n\na long text\n"


def test_run_pulls_a_missing_model_first(cli: Cli) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/models/ai/new":
            return openai_error(404, "model ai/new:latest not found")
        if request.url.path == "/models/create":
            return progress_lines({"type": "success", "message": "Model pulled successfully"})
        return sse("hi")

    cli.handler = handler
    code, out, err = cli("run", "ai/new", "hello", stdin="")
    assert code == 0, err
    assert [r.url.path for r in cli.requests] == ["/models/ai/new", "/models/create", "/v1/chat/completions"]
    assert out.endswith("hi\n")


def test_run_error_event_in_stream_fails(cli: Cli) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/v1"):
            body = 'data: {"error": {"message": "runner unavailable"}}\n\n'
            return httpx.Response(200, content=body.encode())
        return httpx.Response(200, json=GEMMA)

    cli.handler = handler
    code, _, err = cli("run", "ai/gemma3", "x", stdin="")
    assert code == 1 and "runner unavailable" in err


def test_ps_df_tables_and_json(cli: Cli) -> None:
    runner = {"backend_name": "llama.cpp", "model_name": "docker.io/ai/gemma3:latest", "mode": "completion",
              "last_used": 1_700_000_000, "in_use": False, "loading": False, "keep_alive": "5m",
              "memory_bytes": 300_000_000, "slots": 4, "slots_busy": 1, "queued": 0, "expires_at": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/engines/ps":
            return httpx.Response(200, json=[runner])
        return httpx.Response(200, json={"models_disk_usage": 253_360_000, "default_backend_disk_usage": 0})

    cli.handler = handler
    code, out, _ = cli("ps")
    assert code == 0 and "ai/gemma3:latest" in out and "300.00 MB" in out and "1/4" in out and "never" in out
    code, out, _ = cli("ps", "--json")
    assert json.loads(out) == [runner]
    code, out, _ = cli("df")
    assert "253.36 MB" in out
    code, out, _ = cli("df", "--json")
    assert json.loads(out)["models_disk_usage"] == 253_360_000


def test_unload_and_configure_bodies(cli: Cli) -> None:
    cli.handler = lambda r: httpx.Response(200, json={"unloaded_runners": 2}) if r.url.path == "/engines/unload" else httpx.Response(202)
    code, out, _ = cli("unload", "--all")
    assert code == 0 and "Unloaded 2 models" in out
    assert json.loads(cli.requests[-1].content) == {"all": True, "models": []}
    code, _, err = cli("unload")
    assert code == 1 and "--all" in err
    code, out, _ = cli("configure", "ai/gemma3", "--context-size", "4096", "--keep-alive", "10m", "--parallel", "4")
    assert code == 0
    assert json.loads(cli.requests[-1].content) == {"model": "ai/gemma3", "context-size": 4096, "keep_alive": "10m", "parallel": 4}
    code, _, err = cli("configure", "ai/gemma3")
    assert code == 1 and "nothing to configure" in err


def test_configure_show(cli: Cli) -> None:
    setting = {"model": "docker.io/ai/gemma3:latest", "context-size": 4096, "keep_alive": "10m", "parallel": 4}
    cli.handler = lambda r: httpx.Response(200, json={"settings": [setting]})
    code, out, _ = cli("configure", "show")
    assert code == 0 and "ai/gemma3:latest" in out and "4096" in out and "10m" in out
    code, out, _ = cli("configure", "show", "--json")
    assert json.loads(out) == [setting]


def test_plain_text_error_body_is_one_line(cli: Cli) -> None:
    cli.handler = lambda r: httpx.Response(500, text="internal error\nwith a second line")
    code, _, err = cli("df")
    assert code == 1 and err.strip() == "error: internal error"
