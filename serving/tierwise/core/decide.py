"""Score, then decide: what every path that routes requests shares (the service, `tierwise classify`,
`tierwise audit`), and the one wire form of a decision.

The offline paths score a whole batch at once with `score_then_decide`; the service scores
asynchronously (micro-batches, a deadline, the score cache, the estimator under load:
tierwise/service/routing.py) and then hands each score to the same `Policy.decide`. Either way the
classifier's calibrated probabilities are the score, and the policy with the model's q and tier
offsets is the decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tierwise.core.escalation import EscalationQ
from tierwise.core.policy import Decision, Policy, RoutingInput
from tierwise.core.request_text import ClassifierInput


class ManifestLike(Protocol):
    """What routing reads of a model folder's manifest (tierwise.core.model_folder.Manifest)."""

    @property
    def raw(self) -> dict[str, Any]: ...

    @property
    def escalation_q(self) -> EscalationQ: ...

    @property
    def tier_offsets(self) -> tuple[float, ...]: ...

    @property
    def tiers(self) -> tuple[str, ...]: ...


class ClassifierLike(Protocol):
    """What routing needs from a classifier: `tierwise.core.classifier.TierClassifier`, or a double."""

    @property
    def manifest(self) -> ManifestLike: ...

    @property
    def tiers(self) -> tuple[str, ...]: ...

    @property
    def version(self) -> str: ...

    @property
    def model_dir(self) -> Path: ...

    def predict_proba(self, texts: Sequence[ClassifierInput | str]) -> tuple[np.ndarray, list[int]]: ...

    def count_tokens(self, texts: Sequence[ClassifierInput | str]) -> list[int]: ...


def score_then_decide(
    classifier: ClassifierLike, policy: Policy, requests: Sequence[RoutingInput]
) -> list[Decision]:
    """Score the requests as one batch, then decide each with the model's q and tier offsets (a
    policy's own `escalation_q` wins inside `Policy.decide`, as in the service)."""
    probabilities, counts = classifier.predict_proba([r.classifier_input for r in requests])
    q, offsets = classifier.manifest.escalation_q, classifier.manifest.tier_offsets
    return [
        policy.decide(request, probs, int(tokens), q, offsets)
        for request, probs, tokens in zip(requests, probabilities, counts, strict=True)
    ]


def decision_wire_form(decision: Decision, model_version: str) -> dict[str, Any]:
    """A decision as tierwise answers it: the fields of POST /classify (less its request id) and of
    `tierwise classify`'s rows, in that order; the "classified" log line takes its decision fields
    from here too. (A span's attributes and a decision-log row are other forms, read from the
    decision itself.)"""
    return {
        "tier": decision.tier,
        "complexity_tier": decision.complexity_tier,
        "model": decision.model,
        "fallbacks": list(decision.fallbacks),
        "reasons": list(decision.reasons),
        "confidence": decision.confidence,
        "probabilities": decision.probabilities,
        "predicted_tier": decision.predicted_tier,
        "escalated": decision.escalated,
        "decided_by": decision.decided_by,
        "token_count": decision.token_count,
        "segment": decision.segment,
        "segment_bound": decision.segment_bound,
        "model_version": model_version,
    }
