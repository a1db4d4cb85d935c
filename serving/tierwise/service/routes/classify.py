"""The `routing` tag: POST /classify and POST /classify/batch.

Bad input gets a 4xx whose message names the field and the limit; classifier failures route upward
(200, `classifier_unavailable`), so a caller always gets a tier to call.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

from tierwise.core.decide import decision_wire_form
from tierwise.core.policy import Decision, RoutingInput, UnknownTierError, with_private_data
from tierwise.core.request_text import RequestTextError, request_input
from tierwise.evidence.shadow import ShadowEvaluator, offer_shadow
from tierwise.service.canary import decide_split
from tierwise.service.dependencies import (
    ApiKeyDep,
    ContextDep,
    RecorderDep,
    ServicesDep,
    ShadowDep,
    TracingDep,
)
from tierwise.service.errors import api_error, error_responses
from tierwise.service.feedback import submit_decision
from tierwise.service.schemas import (
    BatchClassifyRequest,
    BatchClassifyResponse,
    ClassifyRequest,
    ClassifyResponse,
)
from tierwise.service.state import RequestContext, Services

if TYPE_CHECKING:  # the decision log needs the optional `feedback` extra (SQLAlchemy) at run time
    from tierwise.evidence.decision_log import DecisionRecorder

logger = logging.getLogger("tierwise.service")

router = APIRouter(tags=["routing"])


def routing_input(item: ClassifyRequest, services: Services, field_prefix: str = "") -> RoutingInput:
    """The policy's view of a request; raises HTTP 422 naming the field for unusable input."""
    try:
        read = request_input(item.as_record())
    except RequestTextError as err:
        field = f"{field_prefix}{'text' if item.text is not None else 'messages'}"
        raise api_error(422, "invalid_request", f"{field}: {err}", field) from err
    request = RoutingInput(
        text=read.text, min_tier=item.min_tier, max_tier=item.max_tier, route=item.route, request=read
    )
    try:
        services.policy.validate_request(request)
    except UnknownTierError as err:
        field = f"{field_prefix}{err.field_name}"
        raise api_error(422, "unknown_tier", f"{field_prefix}{err}", field) from err
    except ValueError as err:
        raise api_error(422, "invalid_request", f"{field_prefix}{err}", f"{field_prefix}min_tier") from err
    return request


# The decision's wire fields on the "classified" log line (probabilities and fallbacks stay out of it).
LOGGED_DECISION_FIELDS = (
    "tier",
    "complexity_tier",
    "predicted_tier",
    "reasons",
    "decided_by",
    "escalated",
    "model",
    "token_count",
    "segment",
    "model_version",
)


def to_response(decision: Decision, model_version: str, request_id: str) -> ClassifyResponse:
    return ClassifyResponse(**decision_wire_form(decision, model_version), request_id=request_id)


async def decide_all(services: Services, requests: list[RoutingInput]) -> tuple[list[Decision], str | None]:
    """Decisions for validated requests; never raises (fails upward instead)."""
    services.in_flight += 1
    try:
        routed = await services.router.route_or_fail_upward(requests)
        return routed.decisions, routed.classifier_error
    finally:
        services.in_flight -= 1


def log_decision(
    services: Services,
    context: RequestContext,
    request_id: str,
    item: ClassifyRequest,
    request: RoutingInput,
    decision: Decision,
    classifier_error: str | None,
    recorder: DecisionRecorder | None = None,
    model_version: str | None = None,
    shadow: ShadowEvaluator | None = None,
) -> None:
    """Count the decision, queue it for the decision log and the shadow evaluator, and log it."""
    services.metrics.observe_decision(
        decision.tier, decision.reasons, decision.escalated, decision.decided_by
    )
    services.metrics.observe_segment_decision(decision.segment, decision.tier)
    model_version = model_version or services.classifier.version
    submit_decision(
        recorder, services, request_id, item.route, request.text, decision, context.started, model_version
    )
    offer_shadow(shadow, request_id, item.route, item.as_record, decision)
    wire = decision_wire_form(decision, model_version)
    fields: dict[str, Any] = {
        "request_id": request_id,
        "trace_id": context.trace_id,
        "traceparent": context.traceparent,
        **{name: wire[name] for name in LOGGED_DECISION_FIELDS},
        "confidence": round(decision.confidence, 4),
        "private_data": list(decision.private_data),
        "route": item.route,
        "metadata": item.metadata,
        "latency_ms": round((time.perf_counter() - context.started) * 1000, 3),
    }
    if classifier_error:
        fields["classifier_error"] = classifier_error
    if services.settings.log_prompts:
        fields["text"] = request.text
    logger.info("classified", extra=fields)


CLASSIFY_ERRORS = error_responses(400, 401, 413, 422, 503)


@router.post(
    "/classify", response_model=ClassifyResponse, responses=CLASSIFY_ERRORS, dependencies=[ApiKeyDep]
)
async def classify(
    item: ClassifyRequest,
    services: ServicesDep,
    context: ContextDep,
    recorder: RecorderDep,
    shadow: ShadowDep,
    tracing: TracingDep,
) -> ClassifyResponse:
    """The tier (and model) to call for one request."""
    request = routing_input(item, services)
    [request] = await with_private_data([request])  # a large prompt is scanned off the event loop
    decisions, versions, classifier_error = await decide_split(
        services.canary,
        [request],
        [context.request_id],
        partial(decide_all, services),
        services.classifier.version,
    )
    log_decision(
        services,
        context,
        context.request_id,
        item,
        request,
        decisions[0],
        classifier_error,
        recorder,
        versions[0],
        shadow,
    )
    if tracing is not None:  # on the request's span (serving/tierwise/service/tracing.py)
        tracing.record_decision(context.request_id, decisions[0], versions[0], classifier_error)
    return to_response(decisions[0], versions[0], context.request_id)


@router.post(
    "/classify/batch",
    response_model=BatchClassifyResponse,
    responses=CLASSIFY_ERRORS,
    dependencies=[ApiKeyDep],
)
async def classify_batch(
    batch: BatchClassifyRequest,
    services: ServicesDep,
    context: ContextDep,
    recorder: RecorderDep,
    shadow: ShadowDep,
    tracing: TracingDep,
) -> BatchClassifyResponse:
    """Decisions for many requests in one call, in order."""
    started_ns = time.time_ns()
    limit = services.settings.max_batch_items
    if len(batch.items) > limit:
        raise api_error(
            413,
            "batch_too_large",
            f"items: {len(batch.items)} items; the limit is {limit} per call "
            "(TIERWISE_MAX_BATCH_ITEMS): split the batch",
            "items",
        )
    requests = [routing_input(item, services, f"items.{i}.") for i, item in enumerate(batch.items)]
    requests = await with_private_data(requests)
    item_ids = [f"{context.request_id}-{index}" for index in range(len(requests))]
    decisions, versions, classifier_error = await decide_split(
        services.canary, requests, item_ids, partial(decide_all, services), services.classifier.version
    )
    results = []
    for item_id, item, request, decision, version in zip(
        item_ids, batch.items, requests, decisions, versions, strict=True
    ):
        log_decision(
            services,
            context,
            item_id,
            item,
            request,
            decision,
            classifier_error,
            recorder,
            version,
            shadow,
        )
        results.append(to_response(decision, version, item_id))
    if tracing is not None:  # the batch on the request's span, a child span per item
        items = list(zip(item_ids, decisions, versions, strict=True))
        tracing.record_batch(context.request_id, started_ns, items, classifier_error)
    return BatchClassifyResponse(results=results, request_id=context.request_id)
