"""The local stack's shape: which processes, on which ports, with which environment, and where files go.

Pure data, so the launcher, `modelrunner status/logs/down` and the tests agree on one description.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from modelrunner.common import config

DEFAULT_HTTP_PORT = 12434
DEFAULT_GRPC_BASE_PORT = 12435
HOST = "127.0.0.1"


@dataclass(frozen=True)
class ServiceSpec:
    """One process of the stack: `python -m modelrunner.<name>` listening for gRPC on `addr`."""

    name: str
    addr: str

    @property
    def module(self) -> str:
        return f"modelrunner.{self.name}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module]


@dataclass(frozen=True)
class Ports:
    http: int
    store: int
    distribution: int
    runner: int
    gateway: int  # the gateway's gRPC health service

    @classmethod
    def from_base(cls, http: int, grpc_base: int) -> Ports:
        """`grpc_base` and the next three ports; 0 picks any free ports (for tests and side-by-side stacks)."""
        if grpc_base == 0:
            return cls(http or free_port(), free_port(), free_port(), free_port(), free_port())
        return cls(http, grpc_base, grpc_base + 1, grpc_base + 2, grpc_base + 3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class StackLayout:
    """The stack's files under the data directory."""

    data_dir: Path

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def state_file(self) -> Path:
        return self.run_dir / "stack.json"

    def log_file(self, service: str) -> Path:
        return self.logs_dir / f"{service}.log"

    @classmethod
    def resolve(cls, data_dir: str | None) -> StackLayout:
        """--data-dir, else MODELRUNNER_DATA_DIR, else the user's data directory."""
        return cls(config.data_dir(data_dir or config.DATA_DIR.value()))


@dataclass(frozen=True)
class Stack:
    """The four services in start order (the gateway last: it dials the others)."""

    layout: StackLayout
    ports: Ports
    log_level: str = "info"

    @property
    def services(self) -> list[ServiceSpec]:
        p = self.ports
        return [
            ServiceSpec("store", f"{HOST}:{p.store}"),
            ServiceSpec("distribution", f"{HOST}:{p.distribution}"),
            ServiceSpec("runner", f"{HOST}:{p.runner}"),
            ServiceSpec("gateway", f"{HOST}:{p.gateway}"),
        ]

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.ports.http}"

    def env(self, service: ServiceSpec, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of one service: the caller's, with every address and directory set."""
        env = dict(os.environ if base is None else base)
        p = self.ports
        env.update(
            {
                config.LISTEN.env: service.addr,
                config.STORE_ADDR.env: f"{HOST}:{p.store}",
                config.DISTRIBUTION_ADDR.env: f"{HOST}:{p.distribution}",
                config.RUNNER_ADDR.env: f"{HOST}:{p.runner}",
                config.GATEWAY_ADDR.env: f"{HOST}:{p.gateway}",
                config.HTTP_LISTEN.env: f"{HOST}:{p.http}",
                config.DATA_DIR.env: str(self.layout.data_dir),
                config.MODELS_DIR.env: str(self.layout.models_dir),
                config.LOG_FORMAT.env: env.get(config.LOG_FORMAT.env, "json"),
                config.LOG_LEVEL.env: self.log_level,
                "PYTHONUNBUFFERED": "1",
            }
        )
        # One metrics port shared by four processes would make three of them fail to start.
        env.pop(config.METRICS_LISTEN.env, None)
        return env


@dataclass
class StackState:
    """What `run/stack.json` records of a running stack, for `status`, `logs` and `down`."""

    pid: int  # the supervising launcher
    url: str
    data_dir: str
    state: str  # "starting" | "ready" | "stopping"
    started: float
    services: dict[str, dict] = field(default_factory=dict)  # name -> {"pid", "addr", "log"}

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> StackState | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def pid_alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
