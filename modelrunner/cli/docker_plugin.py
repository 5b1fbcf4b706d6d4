"""`modelrunner install-docker-plugin`: makes `docker model ...` run this CLI.

Docker finds CLI plugins as `docker-<name>` executables in `$DOCKER_CONFIG/cli-plugins` (default
`~/.docker`), asks each for `docker-cli-plugin-metadata`, and runs `docker-model model <args>`.
The shim answers the metadata itself and hands everything after "model" to this Python's CLI.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from modelrunner.cli.output import console


def cli_version() -> str:
    try:
        return version("modelrunner")
    except PackageNotFoundError:
        return "0.0.0"


def plugin_path() -> Path:
    root = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    return Path(root).expanduser() / "cli-plugins" / "docker-model"


def shim(python: str = sys.executable) -> str:
    metadata = json.dumps({
        "SchemaVersion": "0.1.0",
        "Vendor": "Model Runner",
        "Version": cli_version(),
        "ShortDescription": "Pull, run and serve AI models (Model Runner)",
    })
    return (
        "#!/bin/sh\n"
        "# Docker CLI plugin written by `modelrunner install-docker-plugin`: `docker model ...` runs modelrunner.\n"
        'if [ "$1" = "docker-cli-plugin-metadata" ]; then\n'
        f"  printf '%s\\n' {shlex.quote(metadata)}\n"
        "  exit 0\n"
        "fi\n"
        '[ "$1" = "model" ] && shift\n'
        f'exec {shlex.quote(python)} -m modelrunner.cli.main "$@"\n'
    )


def install_docker_plugin() -> None:
    """Install the `docker model` plugin (honours DOCKER_CONFIG)."""
    path = plugin_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(shim())
    tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    os.replace(tmp, path)
    console.print(f"Installed {path}: `docker model ls` now runs modelrunner.", markup=False)
