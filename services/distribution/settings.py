"""The Distribution's own settings (flags and MODELRUNNER_* variables), beyond the shared ones.

Credentials are not flags: a password in a command line shows in `ps`. They come from the
environment or the Docker config (its `auths` or credential helpers) only (see credentials.py).
"""

from __future__ import annotations

from modelrunner.common.config import Setting

DEFAULT_REGISTRY = Setting("default-registry", "docker.io", "registry of names without a host")
CA_BUNDLE = Setting("ca-bundle", "", "PEM file of CA certificates to trust for registries (default: system)")
INSECURE_REGISTRIES = Setting(
    "insecure-registries", "",
    "comma-separated registries (host[:port]) reachable over plain HTTP; loopback always is. A request's "
    "`insecure` cannot add to these",
)
PULL_CONCURRENCY = Setting("pull-concurrency", "4", "layers downloaded in parallel by one pull")
UPLOAD_CHUNK_SIZE = Setting(
    "upload-chunk-size", str(64 << 20), "bytes per PATCH of a blob upload: what a broken push may have to resend"
)

SETTINGS = (DEFAULT_REGISTRY, CA_BUNDLE, INSECURE_REGISTRIES, PULL_CONCURRENCY, UPLOAD_CHUNK_SIZE)
