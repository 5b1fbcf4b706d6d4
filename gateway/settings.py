"""The gateway's own settings (the addresses and common settings live in modelrunner.common.config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from modelrunner.common.config import Setting

API_KEY = Setting("api-key", "", "require `Authorization: Bearer <key>` on every route but /healthz (off if empty)")
CORS_ORIGINS = Setting("cors-origins", "", "comma-separated origins allowed by CORS ('*' for any; off if empty)")
MAX_BODY_BYTES = Setting("max-body-bytes", str(16 * 1024 * 1024), "largest request body accepted (413 above)")
REQUEST_TIMEOUT = Setting("request-timeout", "30", "deadline in seconds of unary gRPC calls to the services")
LONG_TIMEOUT = Setting("long-request-timeout", "3600", "deadline in seconds of packaging, purge and prune")
RUNNER_METRICS_URL = Setting("runner-metrics-url", "", "the Runner's Prometheus URL, appended to GET /metrics")

GATEWAY_SETTINGS = (API_KEY, CORS_ORIGINS, MAX_BODY_BYTES, REQUEST_TIMEOUT, LONG_TIMEOUT, RUNNER_METRICS_URL)


@dataclass(frozen=True)
class GatewayOptions:
    """What the HTTP app needs to know, independent of how it was configured."""

    api_key: str = ""
    cors_origins: list[str] = field(default_factory=list)
    max_body_bytes: int = 16 * 1024 * 1024
    request_timeout: float = 30.0
    long_timeout: float = 3600.0
    runner_metrics_url: str = ""

    @classmethod
    def from_args(cls, args) -> GatewayOptions:
        return cls(
            api_key=args.api_key,
            cors_origins=[o.strip() for o in args.cors_origins.split(",") if o.strip()],
            max_body_bytes=int(args.max_body_bytes),
            request_timeout=float(args.request_timeout),
            long_timeout=float(args.long_request_timeout),
            runner_metrics_url=args.runner_metrics_url,
        )
