"""The `feedback` tag: POST /feedback, the outcome of a routed request (serving/tierwise/service/feedback.py
checks and stores it in the decision log)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request

from tierwise.service.dependencies import ApiKeyDep, RecorderDep, ServicesDep
from tierwise.service.errors import api_error, error_responses
from tierwise.service.feedback import (
    FEEDBACK_OPENAPI,
    FeedbackError,
    FeedbackRequest,
    FeedbackResponse,
    cascade_retry,
    record_feedback,
)

router = APIRouter(tags=["feedback"])


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (numbers must be finite)")


def _unparsable(err: Exception) -> str:
    if isinstance(err, RecursionError):
        return "nested too deeply"
    return str(err)[:200]


# The body is read raw and checked by `record_feedback`, which needs the policy's tiers to check and
# name them; FEEDBACK_OPENAPI puts its schema into the OpenAPI document.
@router.post(
    "/feedback",
    response_model=FeedbackResponse,
    responses=error_responses(400, 401, 403, 404, 413, 422, 503),
    dependencies=[ApiKeyDep],
    openapi_extra=FEEDBACK_OPENAPI,
)
async def feedback(request: Request, services: ServicesDep, recorder: RecorderDep) -> FeedbackResponse:
    """Record the outcome of a routed request: the tier that was needed, or whether it passed."""
    try:
        raw = json.loads(await request.body() or b"null", parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        message = f"body is not valid JSON: {err.msg} at character {err.pos}"
        raise api_error(400, "invalid_json", message, "body") from err
    except (ValueError, RecursionError) as err:  # an over-long integer, NaN, or nesting past the stack
        raise api_error(422, "invalid_request", f"body: {_unparsable(err)}", "body") from err

    def count_cascade_retry(body: FeedbackRequest) -> None:
        retry = cascade_retry(body)
        if retry is not None:
            services.metrics.cascade_retries.inc(*retry)

    try:
        response = await record_feedback(raw, services.policy, recorder, count_cascade_retry)
    except FeedbackError as err:
        raise api_error(err.status, err.error_type, err.message, err.field) from err
    services.metrics.feedback.inc("needed_tier" if response.needed_tier else "passed")
    if len(response.outcome_tiers) == 1:  # the outcome pins the needed tier: a confusion-matrix cell
        tiers = services.policy.tier_names
        private = services.policy.private_tier
        known = (*tiers, private.name) if private is not None else tiers
        routed = response.tier if response.tier in known else "other"  # a tier of an older policy
        services.metrics.feedback_outcomes.inc(routed, response.outcome_tiers[0])
    return response
