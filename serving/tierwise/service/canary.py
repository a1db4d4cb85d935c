"""Canary: a candidate model folder named by the policy decides a share of the requests.

Which requests: those whose request id hashes (SHA-256, first 8 bytes as a fraction of 2^64) below
the share, so the split is deterministic: a retried request id meets the same model, and every
replica splits alike. The candidate has its own classifier, scorer (no micro-batching: it sees a
slice of the traffic) and router under the same policy and deadline; when it fails, its requests
fail upward exactly as the primary's would.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tierwise.core.policy import CanaryConfig, Decision, Policy, RoutingInput
from tierwise.service.batcher import DirectScorer
from tierwise.service.routing import Router
from tierwise.service.settings import Settings

logger = logging.getLogger("tierwise.canary")

PrimaryDecider = Callable[[Any, list[RoutingInput]], Awaitable[tuple[list[Decision], str | None]]]


def canary_fraction(request_id: str) -> float:
    """A request id's position in [0, 1): the same on every replica and every retry."""
    digest = hashlib.sha256(request_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def goes_to_canary(request_id: str, share: float) -> bool:
    return canary_fraction(request_id) < share


@dataclass
class Canary:
    config: CanaryConfig
    classifier: Any
    scorer: DirectScorer
    router: Router

    @property
    def version(self) -> str:
        return str(self.classifier.version)


def build_canary(
    policy: Policy, settings: Settings, classifier_factory: Callable[[Settings], Any], metrics: Any
) -> Canary | None:
    """Load the policy's candidate model (blocking; run in a thread), or None without a canary.

    Raises what loading a model folder raises (ModelFolderError) or PolicyError when its tiers differ.
    """
    config = policy.canary
    if config is None:
        return None
    candidate_settings = settings.model_copy(update={"model_dir": config.model_dir})
    classifier = classifier_factory(candidate_settings)
    policy.check_model_tiers(classifier.tiers)
    classifier.predict_proba(["warm up", "Prove that the algorithm terminates."])
    scorer = DirectScorer(classifier.predict_proba, on_batch=metrics.observe_batch)
    router = Router.for_classifier(policy, scorer, classifier, candidate_settings)
    canary = Canary(config, classifier, scorer, router)
    # The executor thread goes when the canary does (a reload builds a new one).
    executor = scorer._executor
    weakref.finalize(canary, executor.shutdown, wait=False, cancel_futures=True)
    logger.info(
        "canary loaded",
        extra={"model_version": canary.version, "model_dir": str(config.model_dir), "share": config.share},
    )
    return canary


async def decide_split(
    services: Any,
    requests: list[RoutingInput],
    request_ids: Sequence[str],
    decide_primary: PrimaryDecider,
) -> tuple[list[Decision], list[str], str | None]:
    """Decisions, the deciding model version per request, and the classifier error (if any).

    Without a canary every request goes to `decide_primary(services, requests)`.
    """
    primary_version = str(services.classifier.version)
    canary: Canary | None = getattr(services, "canary", None)
    if canary is None:
        decisions, error = await decide_primary(services, requests)
        return decisions, [primary_version] * len(requests), error
    chosen = [goes_to_canary(rid, canary.config.share) for rid in request_ids]
    primary_index = [i for i, c in enumerate(chosen) if not c]
    canary_index = [i for i, c in enumerate(chosen) if c]

    async def on_canary(batch: list[RoutingInput]) -> tuple[list[Decision], str | None]:
        try:
            routed = await canary.router.route(batch)
            return routed.decisions, routed.classifier_error
        except Exception as err:
            logger.error("canary routing failed, routing upward", exc_info=err)
            return [services.policy.unavailable_decision(r) for r in batch], f"{type(err).__name__}: {err}"

    async def nothing() -> tuple[list[Decision], str | None]:
        return [], None

    (primary_decisions, primary_error), (canary_decisions, canary_error) = await asyncio.gather(
        decide_primary(services, [requests[i] for i in primary_index]) if primary_index else nothing(),
        on_canary([requests[i] for i in canary_index]) if canary_index else nothing(),
    )
    decisions: list[Decision | None] = [None] * len(requests)
    versions = [primary_version] * len(requests)
    for i, decision in zip(primary_index, primary_decisions, strict=True):
        decisions[i] = decision
    for i, decision in zip(canary_index, canary_decisions, strict=True):
        decisions[i] = decision
        versions[i] = canary.version
    return [d for d in decisions if d is not None], versions, primary_error or canary_error


def canary_info(services: Any) -> dict[str, Any] | None:
    canary: Canary | None = getattr(services, "canary", None)
    if canary is None:
        return None
    return {
        "model_version": canary.version,
        "model_dir": str(canary.config.model_dir),
        "share": canary.config.share,
    }
