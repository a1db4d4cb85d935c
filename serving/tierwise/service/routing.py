"""Classifier plus policy under a deadline: the decision for each request, never blind under load.

Each answer says how it was decided (`Decision.decided_by`):
- `encoder`: the fine-tuned classifier answered within the deadline;
- `estimator`: the encoder could not have answered in time (admission control: its queue is deeper
  than the deadline allows) or did not, and the model folder's cheap estimator answered at once,
  calibrated and escalated like the encoder (reason `estimated`);
- `fallback`: no scorer could answer (the classifier raised, or a folder without an estimator
  missed its deadline): the policy's top tier with reason `classifier_unavailable`.
The caller never sees a failure as an error.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from tierwise.core.decide import ClassifierLike
from tierwise.core.escalation import EscalationQ, TierOffsets
from tierwise.core.estimator import Estimator, estimator_for
from tierwise.core.policy import (
    DECIDED_BY_ESTIMATOR,
    ESTIMATED,
    Decision,
    Policy,
    RoutingInput,
    SegmentGuard,
)
from tierwise.core.request_text import ClassifierInput
from tierwise.core.scoring import CHARS_PER_TOKEN_ESTIMATE
from tierwise.core.segments import SegmentModel, segment_for
from tierwise.evidence.segment_control import SegmentController
from tierwise.service.batcher import DEFAULT_MAX_BATCH_SIZE, Score, Scorer
from tierwise.service.score_cache import ScoreCache
from tierwise.service.settings import DEFAULT_ADMISSION_SHARE, Settings

TokenCounter = Callable[[list[ClassifierInput]], list[int]]

logger = logging.getLogger("tierwise.routing")


@dataclass(frozen=True)
class RoutedBatch:
    decisions: list[Decision]
    classifier_error: str | None  # why the encoder did not decide, for the log


@dataclass(frozen=True)
class Scored:
    """The encoder's scores, or why there are none (`overloaded`: slow, not broken)."""

    scores: list[Score] | None
    error: str | None = None
    overloaded: bool = False


def approximate_token_counts(texts: list[ClassifierInput]) -> list[int]:
    """About 4 characters per token: for a classifier without a tokenizer to count with."""
    return [max(1, len(t.text) // CHARS_PER_TOKEN_ESTIMATE) for t in texts]


class Router:
    def __init__(
        self,
        policy: Policy,
        scorer: Scorer,
        default_q: EscalationQ,
        deadline_ms: float | None = None,
        texts_per_deadline: int = DEFAULT_MAX_BATCH_SIZE,
        estimator: Estimator | None = None,
        count_tokens: TokenCounter | None = None,
        cache: ScoreCache | None = None,
        tier_offsets: TierOffsets = None,
        admission_share: float = DEFAULT_ADMISSION_SHARE,
        segments: SegmentModel | None = None,
    ) -> None:
        if not 0.0 < admission_share <= 1.0:
            raise ValueError(f"admission_share must be in (0, 1], got {admission_share}")
        self.admission_share = admission_share
        self.policy = policy
        self.tier_offsets = tier_offsets  # the encoder's; estimator scores use the estimator's own
        self.cache = cache
        self.scorer = scorer
        self.default_q = default_q
        self.estimator = estimator
        self.count_tokens = count_tokens or approximate_token_counts
        self.deadline_ms = policy.deadline_ms if deadline_ms is None else deadline_ms
        # A batch call of many items gets one deadline per `texts_per_deadline` texts.
        self.texts_per_deadline = max(1, texts_per_deadline)
        self.segments = segments  # the model folder's automatic segments (None: only routes)
        self.model_version: str | None = None  # the classifier's: whose decisions are the evidence
        self.guard_may_lower = True  # False for a canary's router: the controller only raises its tiers
        self.controller: SegmentController | None = None  # the per-segment risk controller, when on

    @classmethod
    def for_classifier(
        cls,
        policy: Policy,
        scorer: Scorer,
        classifier: ClassifierLike,
        settings: Settings,
        cache: ScoreCache | None = None,
    ) -> Router:
        """The service's router for a loaded classifier: its calibrated q and tier offsets, its folder's
        estimator and tokenizer count, the settings' deadline and batch size."""
        router = cls(
            policy,
            scorer,
            default_q=classifier.manifest.escalation_q,
            deadline_ms=settings.deadline_ms,
            texts_per_deadline=settings.micro_batch_max_size,
            estimator=estimator_for(classifier, settings.estimator),
            count_tokens=classifier.count_tokens,
            cache=cache,
            tier_offsets=classifier.manifest.tier_offsets,
            admission_share=settings.admission_share,
            segments=SegmentModel.load(classifier.model_dir),
        )
        router.model_version = classifier.version
        return router

    def attach_controller(self, controller: SegmentController | None, evidence: bool = True) -> None:
        """Route with the per-segment controller's settings. `evidence`: this router's model is the one
        whose decisions the controller counts (its q and offsets are what the settings shift); a canary's
        router is guarded too, but only ever upward (`SegmentGuard.may_lower`)."""
        self.controller = controller
        self.guard_may_lower = evidence
        if controller is not None and evidence:
            controller.set_model(self.policy.base_q(self.default_q), self.tier_offsets, self.model_version)

    def guards(self, requests: list[RoutingInput], texts: list[ClassifierInput]) -> list[SegmentGuard]:
        """Each request's segment (its route, else the automatic segment) and the controller's setting."""
        auto: list[str | None] = [None] * len(requests)
        unnamed = [i for i, r in enumerate(requests) if not r.route]
        if self.segments is not None and unnamed:
            for i, name in zip(unnamed, self.segments.assign([texts[i] for i in unnamed]), strict=True):
                auto[i] = name
        segments = [segment_for(r.route, a) for r, a in zip(requests, auto, strict=True)]
        if self.controller is None:
            return [SegmentGuard(segment) for segment in segments]
        guards = [self.controller.guard(segment) for segment in segments]
        return guards if self.guard_may_lower else [replace(g, may_lower=False) for g in guards]

    def deadline_seconds(self, item_count: int) -> float:
        return self.deadline_ms / 1000.0 * math.ceil(item_count / self.texts_per_deadline)

    async def _scores(self, texts: list[ClassifierInput]) -> Scored:
        timeout = self.deadline_seconds(len(texts))
        if self.estimator is not None:
            expected = self.scorer.expected_wait_s(len(texts))
            if expected > timeout * self.admission_share:
                return Scored(None, f"admission: the encoder's queue needs ~{expected * 1000:.0f} ms", True)
        try:
            return Scored(await asyncio.wait_for(self.scorer.score(texts), timeout=timeout))
        except TimeoutError:
            return Scored(None, f"the classifier missed its {timeout * 1000:.0f} ms deadline", True)
        except Exception as err:
            logger.warning("classifier failed, routing upward", exc_info=err)
            return Scored(None, f"the classifier raised {type(err).__name__}: {err}")

    def _estimate(self, texts: list[ClassifierInput]) -> list[Score] | None:
        """The estimator's scores (None when there is none, or it failed: then the fallback)."""
        if self.estimator is None:
            return None
        try:
            probabilities = self.estimator.predict_proba(texts)
            counts = self.count_tokens(texts)
        except Exception as err:
            logger.error("estimator failed, routing upward", exc_info=err)
            return None
        return [Score(np.asarray(p), int(n)) for p, n in zip(probabilities, counts, strict=True)]

    async def _encoder_scores(
        self, texts: list[ClassifierInput]
    ) -> tuple[list[Score | None], str | None, bool]:
        """Scores from the cache, then the encoder for the rest: (per text a score or None, why some
        are missing, whether they are missing because the encoder was too slow)."""
        found: list[Score | None] = (
            self.cache.lookup(texts) if self.cache is not None else [None] * len(texts)
        )
        missing = [i for i, score in enumerate(found) if score is None]
        if not missing:
            return found, None, False
        scored = await self._scores([texts[i] for i in missing])
        if scored.scores is not None:
            for i, score in zip(missing, scored.scores, strict=True):
                found[i] = score
            if self.cache is not None:
                self.cache.store([texts[i] for i in missing], scored.scores)
        return found, scored.error, scored.overloaded

    async def route_or_fail_upward(self, requests: list[RoutingInput]) -> RoutedBatch:
        """`route`, but never raises: a failure anywhere in routing (a bug) sends the batch to the
        top tier with reason `classifier_unavailable`, the one fail-upward catch of the service."""
        try:
            return await self.route(requests)
        except Exception as err:
            logger.error("routing failed, routing upward", exc_info=err)
            decisions = [self.policy.unavailable_decision(r) for r in requests]
            return RoutedBatch(decisions, f"{type(err).__name__}: {err}")

    async def route(self, requests: list[RoutingInput]) -> RoutedBatch:
        """Decisions in request order. Validate the requests first (`policy.validate_request`)."""
        texts = [r.classifier_input for r in requests]
        scores, error, overloaded = await self._encoder_scores(texts)
        missing = [i for i, score in enumerate(scores) if score is None]
        estimated: set[int] = set()
        if missing and overloaded:
            estimates = self._estimate([texts[i] for i in missing])
            if estimates is not None:
                for i, score in zip(missing, estimates, strict=True):
                    scores[i] = score
                estimated = set(missing)
        guards = self.guards(requests, texts)
        decisions = []
        for index, (request, guard) in enumerate(zip(requests, guards, strict=True)):
            scored = scores[index]
            decision = None if scored is None else self._decide(request, scored, index in estimated, guard)
            if decision is None:
                if scored is not None:
                    error = "the policy raised; see the service log"
                decision = replace(self.policy.unavailable_decision(request), segment=guard.segment)
            decisions.append(decision)
        return RoutedBatch(decisions, error)

    def _decide(
        self, request: RoutingInput, score: Score, estimated: bool, guard: SegmentGuard
    ) -> Decision | None:
        """The policy's decision on one score; None if the policy raised (a bug must not fail the request).
        The segment's setting shifts the encoder's q. Under overload the estimator decides by its own
        rule, raised (never lowered) to what the segment's setting gives on its probabilities: those
        are not the probabilities the controller counted, so the guard can only fail upward."""
        q: EscalationQ
        offsets: TierOffsets
        if estimated and self.estimator is not None:
            q, offsets = self.estimator.escalation_q, self.estimator.tier_offsets
            guard = replace(guard, may_lower=False)
        else:
            q, offsets = self.default_q, self.tier_offsets
        try:
            decision = self.policy.decide(request, score.probabilities, score.token_count, q, offsets, guard)
        except Exception as err:
            logger.error("policy failed, routing upward", exc_info=err)
            return None
        if estimated:
            return replace(decision, reasons=(ESTIMATED, *decision.reasons), decided_by=DECIDED_BY_ESTIMATOR)
        return replace(decision, queue_wait_ms=score.queue_wait_ms)
