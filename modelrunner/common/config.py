"""Configuration from flags and `MODELRUNNER_*` environment variables (a flag wins over the variable).

Every setting is declared once here, so the launcher, docker-compose.yml and the Kubernetes manifests
name the same variables the services read.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import platformdirs

ENV_PREFIX = "MODELRUNNER_"


@dataclass(frozen=True)
class Setting:
    name: str  # the flag, without dashes: "store-addr"
    default: str
    help: str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper().replace("-", "_")

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    def value(self) -> str:
        return os.environ.get(self.env, self.default)


def default_data_dir() -> str:
    return platformdirs.user_data_dir("modelrunner")


# Addresses of the services (host:port), as clients dial them.
STORE_ADDR = Setting("store-addr", "127.0.0.1:12435", "address of the Store service")
DISTRIBUTION_ADDR = Setting("distribution-addr", "127.0.0.1:12436", "address of the Distribution service")
RUNNER_ADDR = Setting("runner-addr", "127.0.0.1:12437", "address of the Runner service")
# Where a service listens; each service's default is its own address above.
LISTEN = Setting("listen", "", "host:port to serve gRPC on")
MODELS_DIR = Setting("models-dir", "", "the models' volume, written by the Store only (default: DATA_DIR/models)")
HTTP_LISTEN = Setting("http-listen", "127.0.0.1:12434", "host:port the gateway serves HTTP on")
GATEWAY_ADDR = Setting("gateway-addr", "127.0.0.1:12438", "address of the gateway's gRPC health service")
DATA_DIR = Setting("data-dir", "", "data directory (default: the user's XDG data directory)")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_LEVEL = Setting("log-level", "info", f"{', '.join(LOG_LEVELS[:-1])} or {LOG_LEVELS[-1]}")
LOG_FORMAT = Setting("log-format", "json", "json or text")
TRACE_FILE = Setting("trace-file", "", "also write finished spans as JSON lines to this file")
METRICS_LISTEN = Setting("metrics-listen", "", "host:port to serve Prometheus metrics on (off if empty)")
SHUTDOWN_GRACE = Setting("shutdown-grace", "30", "seconds in-flight calls may take to finish on SIGTERM")

# TLS for the gRPC hops, from PEM files (see modelrunner/common/tls.py); all empty: plaintext.
TLS_CERT = Setting("tls-cert", "", "PEM certificate this process serves gRPC with and presents as a client")
TLS_KEY = Setting("tls-key", "", "PEM private key of --tls-cert (unencrypted)")
TLS_CA = Setting("tls-ca", "", "PEM roots peers must chain to; on a server it requires client certificates (mTLS)")
TLS_SERVER_NAME = Setting("tls-server-name", "", "name expected in server certificates instead of the dialled host")
TLS = (TLS_CERT, TLS_KEY, TLS_CA, TLS_SERVER_NAME)

COMMON = (LOG_LEVEL, LOG_FORMAT, TRACE_FILE, METRICS_LISTEN, SHUTDOWN_GRACE, *TLS)


def parse(description: str, settings: Sequence[Setting], argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses flags for `settings`, each defaulting to its environment variable, then its default."""
    parser = argparse.ArgumentParser(description=description)
    for setting in settings:
        parser.add_argument(
            f"--{setting.name}",
            dest=setting.dest,
            default=setting.value(),
            help=f"{setting.help} (env {setting.env}, default {setting.default!r})".replace("%", "%%"),
        )
    return parser.parse_args(argv)


def data_dir(value: str) -> Path:
    return Path(value or default_data_dir()).expanduser().resolve()


def models_dir(models: str, data: str) -> Path:
    """The models' volume: MODELS_DIR, else DATA_DIR/models."""
    return Path(models).expanduser().resolve() if models else data_dir(data) / "models"
