"""Fake Docker credential helpers: `docker-credential-<name>` executables written into a folder that a
test puts on PATH, speaking the docker-credential-helpers protocol (`get`, the server URL on stdin,
JSON on stdout, "credentials not found" and exit 1 when it has none)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

SCRIPT = """#!{python}
import json, sys, time
server = sys.stdin.read().strip()
with open({record!r}, "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "server": server}}) + "\\n")
time.sleep({sleep!r})
answers = {answers!r}
raw = {raw!r}
if raw is not None:
    sys.stdout.write(raw)
    sys.stderr.write({stderr!r})
    sys.exit({exit_code!r})
if server not in answers:
    print("credentials not found in native keychain")
    sys.exit(1)
user, secret = answers[server]
print(json.dumps({{"ServerURL": server, "Username": user, "Secret": secret}}))
"""


def write_helper(
    bindir: Path,
    name: str,
    answers: dict[str, tuple[str, str]] | None = None,
    *,
    raw: str | None = None,
    stderr: str = "",
    exit_code: int = 0,
    sleep: float = 0.0,
) -> Path:
    """`bindir/docker-credential-<name>`: answers (user, secret) by server URL, or prints `raw` (and
    `stderr`) and exits with `exit_code`. Each call is recorded in `bindir/<name>.calls` (see calls)."""
    bindir.mkdir(parents=True, exist_ok=True)
    path = bindir / f"docker-credential-{name}"
    path.write_text(SCRIPT.format(python=sys.executable, record=str(bindir / f"{name}.calls"), sleep=sleep,
                                  answers=answers or {}, raw=raw, stderr=stderr, exit_code=exit_code))
    path.chmod(0o755)
    return path


def calls(bindir: Path, name: str) -> list[dict]:
    """The calls helper `name` got so far: {"argv": [...], "server": the server URL it was asked for}."""
    record = bindir / f"{name}.calls"
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def write_docker_config(config_dir: Path, config: dict) -> Path:
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / "config.json"
    path.write_text(json.dumps(config))
    return path


def path_with(bindir: Path) -> str:
    """PATH with `bindir` first."""
    return f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"
