"""Classifier plus policy under a deadline: the decision for each request, failing upward.

If the classifier raises or does not answer within the deadline, each request gets the policy's
top tier with reason `classifier_unavailable`; the caller never sees the failure as an error.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, replace

from serving.batcher import Score, Scorer
from serving.policy import Decision, Policy, RoutingInput
from serving.request_text import ClassifierInput
from serving.settings import Settings

logger = logging.getLogger("tierwise.routing")


@dataclass(frozen=True)
class RoutedBatch:
    decisions: list[Decision]
    classifier_error: str | None  # why the classifier was unavailable, for the log


class Router:
    def __init__(
        self,
        policy: Policy,
        scorer: Scorer,
        default_q: float,
        deadline_ms: float | None = None,
        texts_per_deadline: int = 32,
    ) -> None:
        self.policy = policy
        self.scorer = scorer
        self.default_q = default_q
        self.deadline_ms = policy.deadline_ms if deadline_ms is None else deadline_ms
        # A batch call of many items gets one deadline per `texts_per_deadline` texts.
        self.texts_per_deadline = max(1, texts_per_deadline)

    @classmethod
    def for_classifier(cls, policy: Policy, scorer: Scorer, default_q: float, settings: Settings) -> Router:
        """The service's router: the model's calibrated q, the settings' deadline and batch size."""
        return cls(
            policy,
            scorer,
            default_q=default_q,
            deadline_ms=settings.deadline_ms,
            texts_per_deadline=settings.micro_batch_max_size,
        )

    def deadline_seconds(self, item_count: int) -> float:
        return self.deadline_ms / 1000.0 * math.ceil(item_count / self.texts_per_deadline)

    async def _scores(self, texts: list[ClassifierInput]) -> tuple[list[Score] | None, str | None]:
        timeout = self.deadline_seconds(len(texts))
        try:
            return await asyncio.wait_for(self.scorer.score(texts), timeout=timeout), None
        except TimeoutError:
            return None, f"the classifier missed its {timeout * 1000:.0f} ms deadline"
        except Exception as err:
            logger.warning("classifier failed, routing upward", exc_info=err)
            return None, f"the classifier raised {type(err).__name__}: {err}"

    async def route(self, requests: list[RoutingInput]) -> RoutedBatch:
        """Decisions in request order. Validate the requests first (`policy.validate_request`)."""
        scores, error = await self._scores([r.classifier_input for r in requests])
        decisions = []
        for index, request in enumerate(requests):
            if scores is None:
                decisions.append(self.policy.unavailable_decision(request))
                continue
            score = scores[index]
            try:
                decision = self.policy.decide(request, score.probabilities, score.token_count, self.default_q)
                decisions.append(replace(decision, queue_wait_ms=score.queue_wait_ms))
            except Exception as err:  # a policy bug must not fail the request either
                logger.error("policy failed, routing upward", exc_info=err)
                error = f"the policy raised {type(err).__name__}: {err}"
                decisions.append(self.policy.unavailable_decision(request))
        return RoutedBatch(decisions, error)
