"""OpenTelemetry: spans for every RPC with W3C trace context carried across gRPC hops, and metrics
exported for Prometheus.

Spans go to an OTLP collector when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (and the exporter package is
installed), and to a JSON-lines file when `MODELRUNNER_TRACE_FILE` is set (what the tests read).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence

from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult

log = logging.getLogger(__name__)
_configured = False


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span as one JSON object a line (name, ids, parent, attributes, status)."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in shutdown()
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            for span in spans:
                ctx = span.get_span_context()
                self._file.write(
                    json.dumps(
                        {
                            "name": span.name,
                            "service": span.resource.attributes.get("service.name"),
                            "trace_id": format(ctx.trace_id, "032x"),
                            "span_id": format(ctx.span_id, "016x"),
                            "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
                            "kind": span.kind.name,
                            "status": span.status.status_code.name,
                            "start": span.start_time,
                            "end": span.end_time,
                            "attributes": dict(span.attributes or {}),
                        },
                        default=str,
                    )
                    + "\n"
                )
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._file.close()


def setup_telemetry(service: str, trace_file: str = "") -> None:
    """Installs the tracer and meter providers for this process (once)."""
    global _configured
    if _configured:
        return
    _configured = True
    resource = Resource.create({"service.name": f"modelrunner-{service}"})
    tracer_provider = TracerProvider(resource=resource)
    if trace_file:
        tracer_provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(trace_file)))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but opentelemetry-exporter-otlp is not installed")
        else:
            tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[PrometheusMetricReader()]))


def shutdown_telemetry() -> None:
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()


def server_interceptors() -> list:
    return [aio_server_interceptor()]


def client_interceptors() -> list:
    return list(aio_client_interceptors())
