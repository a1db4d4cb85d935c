"""Canary: a candidate model folder named by the policy decides a share of the requests.

Which requests: those whose request id hashes (SHA-256, first 8 bytes as a fraction of 2^64) below
the share, so the split is deterministic: a retried request id meets the same model, and every
replica splits alike. The candidate has its own classifier, scorer (no micro-batching: it sees a
slice of the traffic) and router under the same policy and deadline; when it fails, its requests
fail upward exactly as the primary's would.

The canary is part of the service's state (`Services.canary`, serving/tierwise/service/state.py),
which builds it with `build_canary`; nothing here needs that state, so the import goes one way.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tierwise.core.decide import ClassifierLike
from tierwise.core.policy import CanaryConfig, Decision, Policy, RoutingInput
from tierwise.service.batcher import DirectScorer, classifier_executor
from tierwise.service.classifier import ClassifierFactory, warm_up
from tierwise.service.metrics import ServiceMetrics
from tierwise.service.routing import Router
from tierwise.service.settings import Settings

logger = logging.getLogger("tierwise.canary")

# Decisions for a batch and the classifier error, if any; never raises (fails upward instead).
Decider = Callable[[list[RoutingInput]], Awaitable[tuple[list[Decision], str | None]]]


def canary_fraction(request_id: str) -> float:
    """A request id's position in [0, 1): the same on every replica and every retry."""
    digest = hashlib.sha256(request_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def goes_to_canary(request_id: str, share: float) -> bool:
    return canary_fraction(request_id) < share


@dataclass
class Canary:
    config: CanaryConfig
    classifier: ClassifierLike
    scorer: DirectScorer
    router: Router

    @property
    def version(self) -> str:
        return str(self.classifier.version)

    async def decide(self, batch: list[RoutingInput]) -> tuple[list[Decision], str | None]:
        """The candidate's decisions; when it fails, the batch routes upward (its router has the
        service's policy: build_canary gives it the same)."""
        routed = await self.router.route_or_fail_upward(batch)
        return routed.decisions, routed.classifier_error

    def info(self) -> dict[str, Any]:
        """What GET /model says about the canary."""
        return {
            "model_version": self.version,
            "model_dir": str(self.config.model_dir),
            "share": self.config.share,
        }


def build_canary(
    policy: Policy, settings: Settings, classifier_factory: ClassifierFactory, metrics: ServiceMetrics
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
    warm_up(classifier, settings.micro_batch_max_size)
    executor = classifier_executor()
    scorer = DirectScorer(classifier.predict_proba, executor=executor, on_batch=metrics.observe_batch)
    router = Router.for_classifier(policy, scorer, classifier, candidate_settings)
    canary = Canary(config, classifier, scorer, router)
    # The executor thread goes when the canary does (a reload builds a new one).
    weakref.finalize(canary, executor.shutdown, wait=False, cancel_futures=True)
    logger.info(
        "canary loaded",
        extra={"model_version": canary.version, "model_dir": str(config.model_dir), "share": config.share},
    )
    return canary


async def decide_split(
    canary: Canary | None,
    requests: list[RoutingInput],
    request_ids: Sequence[str],
    decide_primary: Decider,
    primary_version: str,
) -> tuple[list[Decision], list[str], str | None]:
    """Decisions, the deciding model version per request, and the classifier error (if any).

    Without a canary every request goes to `decide_primary(requests)`.
    """
    if canary is None:
        decisions, error = await decide_primary(requests)
        return decisions, [primary_version] * len(requests), error
    chosen = [goes_to_canary(rid, canary.config.share) for rid in request_ids]
    primary_index = [i for i, c in enumerate(chosen) if not c]
    canary_index = [i for i, c in enumerate(chosen) if c]

    async def nothing() -> tuple[list[Decision], str | None]:
        return [], None

    (primary_decisions, primary_error), (canary_decisions, canary_error) = await asyncio.gather(
        decide_primary([requests[i] for i in primary_index]) if primary_index else nothing(),
        canary.decide([requests[i] for i in canary_index]) if canary_index else nothing(),
    )
    placed: list[Decision | None] = [None] * len(requests)
    versions = [primary_version] * len(requests)
    for i, decision in zip(primary_index, primary_decisions, strict=True):
        placed[i] = decision
    for i, decision in zip(canary_index, canary_decisions, strict=True):
        placed[i] = decision
        versions[i] = canary.version
    return [d for d in placed if d is not None], versions, primary_error or canary_error
