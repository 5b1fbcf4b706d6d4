"""The gateway's own settings (the addresses and common settings live in modelrunner.common.config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from modelrunner.common.config import Setting
from modelrunner.gateway.edge_policy import is_loopback_listen

API_KEY = Setting(
    "api-key", "", "require `Authorization: Bearer <key>` (or `x-api-key`) on every route but /healthz (off if empty)"
)
ORIGINS = Setting(
    "origins", "",
    "comma-separated browser origins allowed besides the stack's own (CORS answers them; '*' for any); "
    "a request with any other Origin is refused 403",
)
ALLOWED_HOSTS = Setting(
    "allowed-hosts", "",
    "comma-separated Host names answered besides localhost, IP addresses and this machine's name; when set, "
    "or when HTTP_LISTEN is loopback, any other Host is refused 403 (DNS rebinding); '*' for any",
)
MAX_BODY_BYTES = Setting("max-body-bytes", str(16 * 1024 * 1024), "largest request body accepted (413 above)")
REQUEST_TIMEOUT = Setting("request-timeout", "30", "deadline in seconds of unary gRPC calls to the services")
LONG_TIMEOUT = Setting("long-request-timeout", "3600", "deadline in seconds of packaging, purge and prune")
RUNNER_METRICS_URL = Setting("runner-metrics-url", "", "the Runner's Prometheus URL, appended to GET /metrics")
RECORDED_REQUESTS = Setting("recorded-requests", "10", "requests kept per model for GET /engines/requests (0: off)")
RECORDED_BODY_BYTES = Setting("recorded-body-bytes", "32768", "bytes of each request and answer body the recorder keeps")

GATEWAY_SETTINGS = (
    API_KEY, ORIGINS, ALLOWED_HOSTS, MAX_BODY_BYTES, REQUEST_TIMEOUT, LONG_TIMEOUT, RUNNER_METRICS_URL,
    RECORDED_REQUESTS, RECORDED_BODY_BYTES,
)


def split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


@dataclass(frozen=True)
class GatewayOptions:
    """What the HTTP app needs to know, independent of how it was configured.

    `allowed_hosts` None: no Host check (the gateway is not bound to loopback and none were configured)."""

    api_key: str = field(default="", repr=False)  # never in a repr, so never in a log line or traceback
    origins: list[str] = field(default_factory=list)
    allowed_hosts: list[str] | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    request_timeout: float = 30.0
    long_timeout: float = 3600.0
    runner_metrics_url: str = ""
    recorded_requests: int = 10
    recorded_body_bytes: int = 32768

    @classmethod
    def from_args(cls, args) -> GatewayOptions:
        hosts = split_list(args.allowed_hosts)
        loopback = is_loopback_listen(args.http_listen)  # then the Host check is on even with no list
        return cls(
            api_key=args.api_key,
            origins=split_list(args.origins),
            allowed_hosts=None if "*" in hosts or not (hosts or loopback) else hosts,
            max_body_bytes=int(args.max_body_bytes),
            request_timeout=float(args.request_timeout),
            long_timeout=float(args.long_request_timeout),
            runner_metrics_url=args.runner_metrics_url,
            recorded_requests=int(args.recorded_requests),
            recorded_body_bytes=int(args.recorded_body_bytes),
        )
