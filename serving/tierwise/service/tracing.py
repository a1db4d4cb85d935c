"""OpenTelemetry spans for routing decisions (the `tracing` extra; TIERWISE_TRACING=true).

The span: FastAPI's own (native) telemetry makes one SERVER span per HTTP request, named
`POST /classify` / `POST /classify/batch`, continuing the caller's trace from its `traceparent` /
`tracestate` headers (the W3C propagator, or what OTEL_PROPAGATORS names), with the HTTP attributes
and an error status for 5xx. tierwise hands FastAPI its tracer provider and adds the decision to
that span; a batch gets one child span per item (`tierwise.decision`), so each decision is a span:

- `tierwise.request_id`: the request id (an item's is `<request id>-<index>`), as in the decision log;
- `tierwise.tier`, `tierwise.model`, `tierwise.reasons`, `tierwise.escalated`, `tierwise.predicted_tier`;
- `tierwise.decision_path`: how the tier was decided (`decision_path`): `privacy`, `route_override`,
  `classifier_unavailable` (the fail-upward fallback; `tierwise.classifier_error` says why) or `classifier`;
- `tierwise.model_version`: the model that decided it (a canary's version for the canary's share);
- `tierwise.queue_wait_ms`: how long the text waited in the micro-batch queue before its batch ran
  (absent when the classifier did not answer).

No prompt text is ever put on a span. Health, readiness and metrics scrapes are not traced; FastAPI's
per-operation spans, OpenTelemetry metrics and logs stay off (tierwise has /metrics and JSON logs).

Where spans go: a tracer provider the process set up (`opentelemetry-instrument`, an embedding app)
is used as it is; otherwise tierwise builds one from the standard variables: OTEL_SERVICE_NAME /
OTEL_RESOURCE_ATTRIBUTES (service name `tierwise` by default), OTEL_TRACES_SAMPLER, and
OTEL_TRACES_EXPORTER: `otlp` (the default; needs opentelemetry-exporter-otlp-proto-http or -grpc,
configured by OTEL_EXPORTER_OTLP_*), `console`, or `none`. Without an exporter the spans are still
made (and the context propagated) but go nowhere.

With TIERWISE_TRACING off, FastAPI's telemetry is switched off too (no span, no provider lookup per
request) and the OpenTelemetry SDK is never imported. (opentelemetry-api itself is imported by
FastAPI 0.165 on every install: it is one of FastAPI's own dependencies.)
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from typing import Any

from fastapi.telemetry import TelemetryConfig

from tierwise.core.policy import CLASSIFIER_UNAVAILABLE, ESTIMATED, PRIVATE_DATA, ROUTE_OVERRIDE, Decision
from tierwise.service.settings import Settings

logger = logging.getLogger("tierwise.tracing")

INSTRUMENTATION_NAME = "tierwise"
DEFAULT_SERVICE_NAME = "tierwise"
ITEM_SPAN_NAME = "tierwise.decision"
NOT_INSTALLED = (
    "TIERWISE_TRACING is on but the OpenTelemetry SDK is not installed: serving without traces; "
    "install the extra (pip install 'tierwise[tracing]') to get them"
)
# Decision paths, most decisive first (see `decision_path`).
PATH_PRIVACY = "privacy"
PATH_ROUTE_OVERRIDE = "route_override"
PATH_CLASSIFIER_UNAVAILABLE = CLASSIFIER_UNAVAILABLE
PATH_CLASSIFIER = "classifier"
PATH_ESTIMATOR = "estimator"


def decision_path(decision: Decision) -> str:
    """How the tier was decided: the private tier for personal data, a route's override, the fail-upward
    fallback when no scorer answered, the estimator when the encoder could not answer in time, or the
    classifier (with the policy's escalation, floors
    and ceilings, which `tierwise.reasons` lists)."""
    if PRIVATE_DATA in decision.reasons:
        return PATH_PRIVACY
    if ROUTE_OVERRIDE in decision.reasons:
        return PATH_ROUTE_OVERRIDE
    if CLASSIFIER_UNAVAILABLE in decision.reasons:
        return PATH_CLASSIFIER_UNAVAILABLE
    if ESTIMATED in decision.reasons:
        return PATH_ESTIMATOR
    return PATH_CLASSIFIER


def decision_attributes(
    request_id: str, decision: Decision, model_version: str, classifier_error: str | None
) -> dict[str, Any]:
    """A decision's span attributes (no prompt text, ever)."""
    attributes: dict[str, Any] = {
        "tierwise.request_id": request_id,
        "tierwise.tier": decision.tier,
        "tierwise.model": decision.model,
        "tierwise.reasons": list(decision.reasons),
        "tierwise.escalated": decision.escalated,
        "tierwise.decision_path": decision_path(decision),
        "tierwise.model_version": model_version,
    }
    if decision.predicted_tier is not None:  # span attributes cannot be None
        attributes["tierwise.predicted_tier"] = decision.predicted_tier
    if decision.segment is not None:
        attributes["tierwise.segment"] = decision.segment
    if decision.segment_bound is not None:
        attributes["tierwise.segment_bound"] = round(decision.segment_bound, 4)
    if decision.queue_wait_ms is not None:
        attributes["tierwise.queue_wait_ms"] = round(decision.queue_wait_ms, 3)
    if classifier_error and CLASSIFIER_UNAVAILABLE in decision.reasons:
        attributes["tierwise.classifier_error"] = classifier_error
    return attributes


UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# FastAPI's telemetry with tracing off: no spans, metrics or logs, and no provider lookups per request.
TELEMETRY_OFF: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
    "auto_configure": False,
}


def untraced(scope: MutableMapping[str, Any]) -> bool:
    """FastAPI's `exclude`: no spans for probes and scrapes."""
    return scope.get("path") in UNTRACED_PATHS


class Tracing:
    """tierwise's part of the spans; built by `open_tracing` in `create_app`, closed in the lifespan."""

    def __init__(self, provider: Any, owns_provider: bool) -> None:
        from opentelemetry import trace

        self._trace = trace
        self.provider = provider
        self.owns_provider = owns_provider
        self.tracer = provider.get_tracer(INSTRUMENTATION_NAME)

    def fastapi_telemetry(self) -> TelemetryConfig:
        """`FastAPI(telemetry=...)`: a SERVER span per request on this provider, the decision on it."""
        return {
            **TELEMETRY_OFF,
            "tracer_provider": self.provider,
            "tracing": True,
            "exclude": untraced,
        }

    def record_decision(
        self, request_id: str, decision: Decision, model_version: str, classifier_error: str | None
    ) -> None:
        """Put one decision on the current span (the request's SERVER span)."""
        span = self._trace.get_current_span()
        span.set_attributes(decision_attributes(request_id, decision, model_version, classifier_error))

    def record_batch(
        self,
        request_id: str,
        start_ns: int,
        items: list[tuple[str, Decision, str]],
        classifier_error: str | None,
    ) -> None:
        """The batch on the current span, and a child span per item (id, decision, model version) from
        `start_ns` (when the batch call began) to now."""
        span = self._trace.get_current_span()
        span.set_attributes({"tierwise.request_id": request_id, "tierwise.batch_items": len(items)})
        if classifier_error:
            span.set_attribute("tierwise.classifier_error", classifier_error)
        for item_id, decision, model_version in items:
            self.tracer.start_span(
                ITEM_SPAN_NAME,
                attributes=decision_attributes(item_id, decision, model_version, classifier_error),
                start_time=start_ns,
            ).end()

    def close(self) -> None:
        """Flush and stop the exporters, when tierwise built the provider."""
        if self.owns_provider:
            self.provider.shutdown()


def fastapi_telemetry(tracing: Tracing | None) -> TelemetryConfig:
    """The `telemetry` argument for `FastAPI(...)`."""
    return TelemetryConfig(**TELEMETRY_OFF) if tracing is None else tracing.fastapi_telemetry()


def open_tracing(settings: Settings, provider: Any = None) -> Tracing | None:
    """The service's tracing, or None when TIERWISE_TRACING is off or opentelemetry is not installed.

    `provider`: a tracer provider to use (tests pass one with an in-memory exporter); otherwise the
    process's own if one was set up, else one built from the OTEL_* variables (`build_provider`).
    """
    if not settings.tracing:
        return None
    try:
        from opentelemetry import trace
    except ImportError:
        logger.warning(NOT_INSTALLED)
        return None
    if provider is not None:
        return Tracing(provider, owns_provider=False)
    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider):  # set up by the process: use it
        return Tracing(current, owns_provider=False)
    try:
        return Tracing(build_provider(), owns_provider=True)
    except ImportError:
        logger.warning(NOT_INSTALLED)
        return None


def build_provider() -> Any:
    """An SDK tracer provider from the OTEL_* variables: resource, sampler, exporters."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)  # the sampler: OTEL_TRACES_SAMPLER (parent-based)
    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    exporters = [exporter for name in names if name and (exporter := make_exporter(name)) is not None]
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    logger.info(
        "tracing on",
        extra={
            "service_name": resource.attributes.get(SERVICE_NAME),
            "exporters": [type(e).__name__ for e in exporters],
        },
    )
    return provider


def make_exporter(name: str) -> Any:
    """The span exporter OTEL_TRACES_EXPORTER names, or None (`none`, unknown, or not installed)."""
    if name == "none":
        return None
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        logger.warning("OTEL_TRACES_EXPORTER names %r, which tierwise does not know: ignored", name)
        return None
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    ).strip()
    modules = {
        "http/protobuf": ["opentelemetry.exporter.otlp.proto.http.trace_exporter"],
        "grpc": ["opentelemetry.exporter.otlp.proto.grpc.trace_exporter"],
    }.get(
        protocol,
        [
            "opentelemetry.exporter.otlp.proto.http.trace_exporter",
            "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        ],
    )
    for module_name in modules:
        try:
            module = __import__(module_name, fromlist=["OTLPSpanExporter"])
        except ImportError:
            continue
        return module.OTLPSpanExporter()
    level = logging.WARNING if "OTEL_TRACES_EXPORTER" in os.environ else logging.INFO
    logger.log(
        level,
        "no OTLP span exporter is installed (pip install opentelemetry-exporter-otlp-proto-http): spans "
        "are made and propagated but not exported; OTEL_TRACES_EXPORTER=console prints them",
    )
    return None
