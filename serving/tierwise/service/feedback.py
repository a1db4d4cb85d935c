"""POST /feedback and the decision records the service writes: the glue between the app and the log.

An outcome says which tier turned out to be needed, or whether the served tier's answer passed:

    {"request_id": "...", "outcome": {"needed_tier": "balanced"}, "source": "grader"}
    {"request_id": "...", "outcome": {"passed": false}, "source": "retry"}
    {"request_id": "...", "outcome": "balanced"}      # shorthand for needed_tier
    {"request_id": "...", "outcome": "passed"}        # shorthand for passed: true ("failed": false)

A gateway that tried several tiers reports each one's failure: `tier` names the tier whose answer the
outcome is about (default: the served tier), `reason` why it failed, and `evidence` (a small JSON
object) what else it knows; both go into the feedback row's `evidence`:

    {"request_id": "...", "outcome": {"passed": false}, "source": "cascade", "tier": "balanced",
     "reason": "invalid_json", "evidence": {"next_tier": "frontier", "cost_usd": 0.0031}}
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError, model_validator

from tierwise.core.cascade_names import CASCADE_SOURCE, known_reason
from tierwise.core.policy import Decision, Policy
from tierwise.service.settings import Settings
from tierwise.service.state import Services

logger = logging.getLogger("tierwise.feedback")

PASSED_WORDS = {"passed": True, "pass": True, "failed": False, "fail": False}
UNKNOWN_ID_WAIT_SECONDS = 2.0
MAX_EVIDENCE_CHARS = 4096  # a feedback row's `evidence`, as JSON
MAX_EVIDENCE_DEPTH = 8  # objects and lists inside one another in `evidence`, itself included


class FeedbackOutcome(BaseModel):
    """Exactly one of `needed_tier` (the cheapest tier that would have done) or `passed`."""

    model_config = ConfigDict(extra="forbid")

    needed_tier: StrictStr | None = Field(default=None, description="the tier that turned out to be needed")
    passed: StrictBool | None = Field(default=None, description="did the served tier's answer pass?")

    @model_validator(mode="after")
    def exactly_one(self) -> FeedbackOutcome:
        if (self.needed_tier is None) == (self.passed is None):
            raise ValueError("give exactly one of 'needed_tier' (a tier name) or 'passed' (true/false)")
        return self


class FeedbackRequest(BaseModel):
    """The outcome of a routed request, keyed by the `request_id` that /classify returned."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"request_id": "3f2a...", "outcome": {"needed_tier": "balanced"}, "source": "grader"}
            ]
        },
    )

    request_id: StrictStr = Field(min_length=1, max_length=128)
    outcome: FeedbackOutcome
    source: StrictStr | None = Field(
        default=None,
        max_length=64,
        description="where the outcome came from, e.g. grader, retry, user, cascade",
    )
    tier: StrictStr | None = Field(
        default=None,
        max_length=64,
        description="the tier whose answer the outcome is about (default: the served tier), e.g. a cascade's retry",
    )
    reason: StrictStr | None = Field(
        default=None,
        max_length=64,
        description="why the answer failed, e.g. invalid_json, truncated, refusal",
    )
    evidence: dict[str, Any] | None = Field(
        default=None,
        description=f"what else the reporter knows, a JSON object of at most {MAX_EVIDENCE_CHARS} chars, "
        f"nested at most {MAX_EVIDENCE_DEPTH} deep, with finite numbers",
    )

    @model_validator(mode="before")
    @classmethod
    def outcome_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("outcome"), str):
            word = data["outcome"]
            outcome = {"passed": PASSED_WORDS[word]} if word in PASSED_WORDS else {"needed_tier": word}
            data = {**data, "outcome": outcome}
        return data


class FeedbackResponse(BaseModel):
    request_id: str
    feedback_id: int
    tier: str = Field(description="the tier that was served")
    predicted_tier: str | None
    model_version: str
    needed_tier: str | None
    passed: bool | None
    outcome_tiers: list[str] = Field(
        description="the tiers this outcome allows (empty: it cannot be placed, e.g. the top tier failed)"
    )


@dataclass(frozen=True)
class FeedbackError(Exception):
    """A 4xx for POST /feedback."""

    status: int
    error_type: str
    message: str
    field: str | None = None


def evidence_problem(value: Any, depth: int = 1) -> str | None:
    """Why `evidence` cannot be stored (None: it can): nested deeper than MAX_EVIDENCE_DEPTH (storing
    it recurses once per level), or a NaN or infinite number (not JSON). Never recurses deeper than
    MAX_EVIDENCE_DEPTH + 1, however deep the value."""
    if isinstance(value, float) and not math.isfinite(value):
        return "numbers must be finite (no NaN or Infinity)"
    if not isinstance(value, dict | list):
        return None
    if depth > MAX_EVIDENCE_DEPTH:
        return f"nested more than {MAX_EVIDENCE_DEPTH} levels deep (objects and lists)"
    for item in value.values() if isinstance(value, dict) else value:
        problem = evidence_problem(item, depth + 1)
        if problem is not None:
            return problem
    return None


def parse_feedback(raw: Any, policy: Policy) -> FeedbackRequest:
    """Validate a feedback body; raise FeedbackError (422) naming the field."""
    if not isinstance(raw, dict):
        raise FeedbackError(
            422, "invalid_request", "body must be a JSON object with request_id and outcome", "body"
        )
    problem = evidence_problem(raw.get("evidence"))  # before anything walks it recursively
    if problem is not None:
        raise FeedbackError(422, "invalid_request", f"evidence: {problem}", "evidence")
    try:
        body = FeedbackRequest.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown field; allowed: request_id, outcome {needed_tier | passed}, source, tier, reason, evidence"
        elif first["type"] == "missing":
            message = "required"
        raise FeedbackError(
            422,
            "invalid_outcome" if field.startswith("outcome") else "invalid_request",
            f"{field}: {message}",
            field,
        ) from err
    needed = body.outcome.needed_tier
    if needed is not None and needed not in policy.tier_names:
        raise FeedbackError(
            422,
            "unknown_tier",
            f"outcome.needed_tier is '{needed}', which is not a tier; use one of: {', '.join(policy.tier_names)} "
            "(or 'passed': true/false)",
            "outcome.needed_tier",
        )
    private = policy.private_tier.name if policy.private_tier is not None else None
    if body.tier is not None and body.tier not in (*policy.tier_names, private):
        raise FeedbackError(
            422, "unknown_tier", f"tier is '{body.tier}', which is not a tier of the policy", "tier"
        )
    if body.evidence is not None and len(json.dumps(body.evidence, default=str)) > MAX_EVIDENCE_CHARS:
        raise FeedbackError(
            422, "invalid_request", f"evidence: at most {MAX_EVIDENCE_CHARS} characters as JSON", "evidence"
        )
    next_tier = (body.evidence or {}).get("next_tier")
    if next_tier is not None and (not isinstance(next_tier, str) or next_tier not in policy.tier_names):
        raise FeedbackError(
            422,
            "unknown_tier",
            f"evidence.next_tier must be null or a tier of the policy ({', '.join(policy.tier_names)}): the "
            "tier a cascade retried with",
            "evidence.next_tier",
        )
    return body


def stored_evidence(body: FeedbackRequest) -> dict[str, Any] | None:
    """The row's `evidence`: the reporter's, with the tier and reason it named."""
    named = {k: v for k, v in (("tier", body.tier), ("reason", body.reason)) if v is not None}
    if body.evidence is None and not named:
        return None
    return {**(body.evidence or {}), **named}


def cascade_retry(body: FeedbackRequest) -> tuple[str, str] | None:
    """(from_tier, reason) when the outcome says a cascade retried one tier up after this failure: the
    labels of tierwise_cascade_retries_total, so bounded (a policy tier, and one of the cascade's
    reasons or `other`), whatever the reporter sent."""
    if body.source != CASCADE_SOURCE or not (body.evidence or {}).get("next_tier"):
        return None
    return body.tier or "unknown", known_reason(body.reason)


async def record_feedback(
    raw: Any, policy: Policy, recorder: Any, on_stored: Callable[[FeedbackRequest], None] | None = None
) -> FeedbackResponse:
    """Check and store one outcome; raise FeedbackError for the caller's mistakes. `on_stored` sees
    each stored body (the service counts cascade retries with it)."""
    from tierwise.evidence.decision_log import DecisionRecorder, FeedbackRecord, outcome_range, utc_now

    if recorder is None:
        raise FeedbackError(
            403,
            "feedback_disabled",
            "the decision log is off (TIERWISE_RECORD_DECISIONS=false), so there is nothing to attach "
            "feedback to; turn it on to collect outcomes",
        )
    assert isinstance(recorder, DecisionRecorder)
    body = parse_feedback(raw, policy)
    store = recorder.store
    decision = await asyncio.to_thread(store.get_decision, body.request_id)
    if decision is None:  # it may still be in the write queue
        await asyncio.to_thread(recorder.wait_idle, UNKNOWN_ID_WAIT_SECONDS)
        decision = await asyncio.to_thread(store.get_decision, body.request_id)
    if decision is None:
        raise FeedbackError(
            404,
            "unknown_request_id",
            f"no decision with request_id '{body.request_id}' is in the decision log; send the request_id "
            "that /classify returned (batch items are '<request_id>-<index>')",
            "request_id",
        )
    judged_tier = body.tier or decision.tier
    bounds = outcome_range(policy.tier_names, judged_tier, body.outcome.needed_tier, body.outcome.passed)
    record = FeedbackRecord(
        request_id=body.request_id,
        created_at=utc_now(),
        needed_tier=body.outcome.needed_tier,
        passed=body.outcome.passed,
        source=body.source,
        low_tier=bounds[0] if bounds else None,
        high_tier=bounds[1] if bounds else None,
        evidence=stored_evidence(body),
    )
    feedback_id = await asyncio.to_thread(store.insert_feedback, record)
    if on_stored is not None:
        on_stored(body)
    names = list(policy.tier_names)
    allowed = names[names.index(bounds[0]) : names.index(bounds[1]) + 1] if bounds else []
    return FeedbackResponse(
        request_id=body.request_id,
        feedback_id=feedback_id,
        tier=decision.tier,
        predicted_tier=decision.predicted_tier,
        model_version=decision.model_version,
        needed_tier=body.outcome.needed_tier,
        passed=body.outcome.passed,
        outcome_tiers=allowed,
    )


FEEDBACK_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": FeedbackRequest.model_json_schema()}},
    }
}


def submit_decision(
    recorder: Any,
    services: Services,
    request_id: str,
    route: str | None,
    text: str,
    decision: Decision,
    started: float,
    model_version: str | None = None,
) -> None:
    """Count the decision per model version and queue it for the decision log; never raises."""
    version = model_version or services.classifier.version
    try:
        services.metrics.version_decisions.inc(version, decision.tier)
        if recorder is None:
            return
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        record = decision_record(
            request_id, version, text, route, decision, latency_ms, services.settings.record_prompts
        )
        recorder.submit(record)
    except Exception as err:  # recording must never fail the answer
        logger.error("could not queue the decision for the decision log: %s", err)


def segment_evidence_reader(recorder: Any) -> Any:
    """What the per-segment controller reads from the decision log (None when recording is off);
    imported here, like the log itself, only when the service records decisions."""
    if recorder is None:
        return None
    from tierwise.evidence.segment_evidence import judged_in_segments

    return partial(judged_in_segments, recorder.store)


def close_recorder(recorder: Any) -> None:
    if recorder is not None:
        recorder.close()


def decision_record(
    request_id: str,
    model_version: str,
    text: str,
    route: str | None,
    decision: Decision,
    latency_ms: float | None,
    keep_text: bool,
) -> Any:
    """The decision-log row for one decision (the prompt text only when `keep_text`)."""
    from tierwise.evidence.decision_log import DecisionRecord, prompt_hash, utc_now

    return DecisionRecord(
        request_id=request_id,
        created_at=utc_now(),
        model_version=model_version,
        tier=decision.tier,
        predicted_tier=decision.predicted_tier,
        confidence=float(decision.confidence),
        probabilities={k: round(float(v), 6) for k, v in decision.probabilities.items()},
        reasons=list(decision.reasons),
        escalated=bool(decision.escalated),
        model=decision.model,
        token_count=decision.token_count,
        text_chars=len(text),
        route=route,
        prompt_sha256=prompt_hash(text),
        prompt_text=text if keep_text else None,
        latency_ms=latency_ms,
        segment=decision.segment,
    )


def open_recorder(settings: Settings, on_outcome: Any = None) -> Any:
    """The started decision recorder (schema migrated), or None when recording is off.

    Raises DecisionLogError (with the setting to fix) when the database cannot be opened; raises
    ImportError with the install command when the `feedback` extra is missing.
    """
    if not settings.record_decisions:
        return None
    try:
        from tierwise.evidence.decision_log import DecisionRecorder, DecisionStore
    except ImportError as err:
        raise ImportError(
            f"recording decisions needs SQLAlchemy and Alembic ({err}): pip install 'tierwise[feedback]', "
            "or set TIERWISE_RECORD_DECISIONS=false"
        ) from err
    store = DecisionStore(settings.decision_db)
    store.upgrade()
    recorder = DecisionRecorder(store, max_queue=settings.decision_queue_size, on_outcome=on_outcome)
    recorder.start()
    logger.info("decision log ready", extra={"decision_db": str(store.engine.url)})
    return recorder
