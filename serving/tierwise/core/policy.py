"""The routing policy: pure code from the classifier's probabilities to the tier to call.

`policy_file.load_policy` reads the YAML file (`serving/tierwise/core/policy.yaml`) into the typed
dataclasses here, and `Policy.decide` applies, in this order:

1. the upward rule: the lowest tier t with calibrated P(true tier <= t) >= q (`low_confidence` when
   that is above the most likely tier); with no probabilities (the classifier raised or missed its
   deadline) the top tier (`classifier_unavailable`). With a segment guard (the per-segment risk
   controller, tierwise.core.segment_guard) the segment's setting replaces q (`segment_guard` when
   that sends the request higher than the model's own q would);
2. the long-context threshold: at least `long_context.min_tier` (`long_context`);
3. the route override: a pinned tier or a floor (`route_override`);
4. the caller's `min_tier` floor (`min_tier`) and `max_tier` cap (`max_tier`);
5. the context limit: never a tier whose `context_tokens` cannot hold the prompt (`long_context`),
   even against `max_tier`, since such a call could only fail;
6. privacy: personal data or secrets send the request to the `private_tier` when one is defined
   (`private_data`), whatever the rules above chose, and its fallbacks stay private.

Every decision also says, for a gateway to act on:
- `complexity_tier`: the public tier rules 1-5 chose. It is `tier` except for a private request,
  where it tells a private deployment which size of model the request needs;
- `confidence` (`routing_confidence`): the calibrated probability that the complexity tier is right
  in the direction that can go wrong. Below the top tier the risk is under-routing, so it is
  P(true tier <= tier), the probability the tier suffices; at the top tier nothing is stronger and
  the risk is paying for it needlessly, so it is P(true tier > the tier below), the probability a
  cheaper tier would not do. 0.0 when no classifier answered (`classifier_unavailable`).

No ONNX, no I/O: everything here is testable with plain numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from tierwise.core.escalation import (
    EscalationQ,
    TierOffsets,
    cumulative_confidence,
    most_likely_tier,
    route_upward,
    routing_confidence,
)
from tierwise.core.privacy import (
    OFFLOAD_CHARS,
    detect_private_data,
    detect_private_data_async,
)
from tierwise.core.privacy import (
    PRIVATE_DATA as PRIVATE_DATA,
)
from tierwise.core.request_text import ClassifierInput
from tierwise.core.segment_guard import SEGMENT_GUARD, GuardSetting, setting_tiers

LOW_CONFIDENCE = "low_confidence"
LONG_CONTEXT = "long_context"
ROUTE_OVERRIDE = "route_override"
MIN_TIER = "min_tier"
MAX_TIER = "max_tier"
CLASSIFIER_UNAVAILABLE = "classifier_unavailable"
ESTIMATED = "estimated"  # the encoder could not answer in time; the estimator did

# How each answer was decided: by the encoder, by the estimator (overload), or blind (top tier on error).
DecidedBy = Literal["encoder", "estimator", "fallback"]
DECIDED_BY: tuple[DecidedBy, ...] = get_args(DecidedBy)
DECIDED_BY_ENCODER, DECIDED_BY_ESTIMATOR, DECIDED_BY_FALLBACK = DECIDED_BY

DEFAULT_DEADLINE_MS = 50.0


class PolicyError(ValueError):
    """The policy file is missing or malformed; the message names the key to fix."""


class UnknownTierError(ValueError):
    """A request named a tier the policy does not have."""

    def __init__(self, field_name: str, tier: str, known: Sequence[str]) -> None:
        self.field_name = field_name
        self.tier = tier
        super().__init__(f"'{field_name}' is '{tier}', which is not a tier; use one of: {', '.join(known)}")


@dataclass(frozen=True)
class TierConfig:
    name: str
    models: tuple[str, ...]
    input_price_per_million: float
    output_price_per_million: float
    context_tokens: int


@dataclass(frozen=True)
class LongContextRule:
    threshold_tokens: int | None
    min_tier: str | None


@dataclass(frozen=True)
class RouteOverride:
    tier: str | None = None  # pin: always this tier
    min_tier: str | None = None  # floor


@dataclass(frozen=True)
class CanaryConfig:
    """A candidate model folder that decides `share` of the traffic (by a hash of the request id)."""

    model_dir: Path
    share: float


@dataclass(frozen=True)
class RoutingInput:
    """What the policy needs to know about one request besides the classifier output."""

    text: str  # every word of the messages (token count, logs); the privacy rule reads `privacy_text`
    min_tier: str | None = None
    max_tier: str | None = None
    route: str | None = None
    request: ClassifierInput | None = None  # the request as the classifier reads it; None: `text` alone
    # The privacy scan's result when it was done ahead (`with_private_data`); None: `decide` scans.
    private_data: tuple[str, ...] | None = None

    @property
    def classifier_input(self) -> ClassifierInput:
        return self.request or ClassifierInput.plain(self.text)

    @property
    def privacy_text(self) -> str:
        """Every string of the request, tool calls and definitions included (`request_strings`)."""
        return self.request.privacy_text if self.request is not None else self.text


@dataclass(frozen=True)
class SegmentGuard:
    """The per-segment controller's word on one request: its segment and the setting it routes with
    (None: the controller is off, or has no state for the segment; the model's q then decides)."""

    segment: str | None
    setting: GuardSetting | None = None
    bound: float | None = None  # the segment's one-sided upper bound on under-routing at the setting
    # False: the setting may only raise the tier (a score the controller did not count: the estimator's
    # under overload, a canary's); the setting's thresholds are then read on the model's own q.
    may_lower: bool = True


@dataclass(frozen=True)
class Decision:
    tier: str
    confidence: float
    probabilities: dict[str, float]
    predicted_tier: str | None
    escalated: bool
    reasons: tuple[str, ...]
    model: str
    fallbacks: tuple[str, ...]
    private_data: tuple[str, ...] = ()  # detector kinds, for the log; never the matched text
    token_count: int | None = None
    queue_wait_ms: float | None = None  # set by the router: time in the scorer's queue (for traces)
    decided_by: str = DECIDED_BY_ENCODER  # set by the router: encoder, estimator or fallback
    complexity_tier: str = ""  # the public tier rules 1-5 chose (`tier`, unless privacy overrode it)
    segment: str | None = None  # the route, else the automatic segment (None: no segments)
    segment_bound: float | None = None  # the segment's under-routing bound, when the guard has one


@dataclass
class _TierChoice:
    """The tier being chosen for one request while the policy's rules run (indices into the tiers)."""

    chosen: int
    reasons: list[str]
    predicted: int | None = None  # the classifier's most likely tier; None without probabilities
    cumulative: np.ndarray | None = None  # (tiers,) calibrated P(true tier <= t)

    def raise_to(self, floor: int, reason: str) -> None:
        if floor > self.chosen:
            self.chosen = floor
            if reason not in self.reasons:
                self.reasons.append(reason)


@dataclass(frozen=True)
class Policy:
    tiers: tuple[TierConfig, ...]
    expected_output_tokens: int = 300
    escalation_q: float | None = None
    long_context: LongContextRule = field(default_factory=lambda: LongContextRule(None, None))
    private_tier: TierConfig | None = None
    routes: Mapping[str, RouteOverride] = field(default_factory=dict)
    deadline_ms: float = DEFAULT_DEADLINE_MS
    canary: CanaryConfig | None = None

    @property
    def tier_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tiers)

    @property
    def top_tier(self) -> str:
        return self.tiers[-1].name

    def tier_index(self, name: str, field_name: str = "tier") -> int:
        try:
            return self.tier_names.index(name)
        except ValueError:
            raise UnknownTierError(field_name, name, self.tier_names) from None

    def check_model_tiers(self, model_tiers: Sequence[str]) -> None:
        """The classifier's tiers must be the policy's ordered tiers, in the same order."""
        if tuple(model_tiers) != self.tier_names:
            raise PolicyError(
                f"the model predicts tiers {list(model_tiers)} but the policy orders "
                f"{list(self.tier_names)}; make the policy's `tiers` list the model's tiers, cheapest first."
            )

    def validate_request(self, request: RoutingInput) -> None:
        """Raise UnknownTierError or ValueError for tier bounds the policy cannot honour."""
        low = self.tier_index(request.min_tier, "min_tier") if request.min_tier is not None else None
        high = self.tier_index(request.max_tier, "max_tier") if request.max_tier is not None else None
        if low is not None and high is not None and low > high:
            raise ValueError(f"'min_tier' ({request.min_tier}) is above 'max_tier' ({request.max_tier})")

    def unavailable_decision(self, request: RoutingInput) -> Decision:
        """Fail upward: the decision when no scorer could answer (the classifier raised, or missed its
        deadline with no estimator to answer instead)."""
        decision = self.decide(request, probabilities=None, token_count=None, default_q=1.0)
        return replace(decision, decided_by=DECIDED_BY_FALLBACK)

    def decide(
        self,
        request: RoutingInput,
        probabilities: Sequence[float] | np.ndarray | None,
        token_count: int | None,
        default_q: EscalationQ,
        tier_offsets: TierOffsets = None,
        guard: SegmentGuard | None = None,
    ) -> Decision:
        """The tier for one request; `probabilities` is None when the classifier is unavailable.
        The rules run in the order of this module's docstring; each may only raise the tier, except
        a route's pinned tier, the caller's `max_tier` cap and the context limit."""
        self.validate_request(request)
        choice = self._classifier_choice(probabilities, default_q, tier_offsets)
        if guard is not None and guard.setting is not None and probabilities is not None:
            self._guard_choice(choice, guard, probabilities, default_q, tier_offsets)
        ceiling = self._apply_rules(choice, request, token_count)
        private_kinds = (
            tuple(detect_private_data(request.privacy_text))
            if request.private_data is None
            else request.private_data
        )
        if private_kinds and self.private_tier is not None:
            choice.reasons.append(PRIVATE_DATA)
            tier, fallbacks = self.private_tier, self.private_tier.models[1:]
        else:
            tier = self.tiers[choice.chosen]
            stronger = [m for t in self.tiers[choice.chosen + 1 : ceiling + 1] for m in t.models]
            fallbacks = (*tier.models[1:], *stronger)
        return Decision(
            tier=tier.name,
            confidence=routing_confidence(choice.cumulative, choice.chosen),
            probabilities=(
                {}
                if probabilities is None
                else {t: float(p) for t, p in zip(self.tier_names, np.ravel(probabilities), strict=True)}
            ),
            predicted_tier=None if choice.predicted is None else self.tier_names[choice.predicted],
            escalated=choice.predicted is None or choice.chosen > choice.predicted,
            reasons=tuple(choice.reasons),
            model=tier.models[0],
            fallbacks=tuple(fallbacks),
            private_data=private_kinds,
            token_count=token_count,
            complexity_tier=self.tier_names[choice.chosen],
            segment=guard.segment if guard is not None else None,
            segment_bound=guard.bound if guard is not None else None,
        )

    def _classifier_choice(
        self, probabilities: Sequence[float] | np.ndarray | None, default_q: EscalationQ, offsets: TierOffsets
    ) -> _TierChoice:
        """Rule 1: the upward rule on the calibrated probabilities with the model's tier offsets;
        the top tier without them."""
        if probabilities is None:
            return _TierChoice(chosen=len(self.tiers) - 1, reasons=[CLASSIFIER_UNAVAILABLE])
        probs = np.asarray(probabilities, dtype=np.float64).reshape(1, -1)  # (1, tiers)
        if probs.shape[1] != len(self.tiers):
            raise PolicyError(f"got {probs.shape[1]} probabilities for {len(self.tiers)} tiers")
        q = self.base_q(default_q)
        predicted = int(most_likely_tier(probs, offsets)[0])
        chosen = int(route_upward(probs, q, offsets)[0])
        reasons = [LOW_CONFIDENCE] if chosen > predicted else []
        return _TierChoice(chosen, reasons, predicted, cumulative_confidence(probs)[0])

    def base_q(self, default_q: EscalationQ) -> EscalationQ:
        """The q the upward rule uses: the policy's `escalation_q` when set, else the model's."""
        return self.escalation_q if self.escalation_q is not None else default_q

    def _guard_choice(
        self,
        choice: _TierChoice,
        guard: SegmentGuard,
        probabilities: Sequence[float] | np.ndarray,
        default_q: EscalationQ,
        offsets: TierOffsets,
    ) -> None:
        """Rule 1 with the segment's setting instead of q (in place): lower when the segment's evidence
        allows (and the guard may lower), higher (`segment_guard`) when it demands."""
        assert guard.setting is not None
        probs = np.asarray(probabilities, dtype=np.float64).reshape(1, -1)
        guarded = int(setting_tiers(guard.setting, probs, self.base_q(default_q), offsets)[0])
        if not guard.may_lower:
            guarded = max(guarded, choice.chosen)
        raised = guarded > choice.chosen
        choice.chosen = guarded
        if not raised and choice.predicted is not None and guarded <= choice.predicted:
            choice.reasons = [r for r in choice.reasons if r != LOW_CONFIDENCE]
        if raised:
            choice.reasons.append(SEGMENT_GUARD)

    def _apply_rules(self, choice: _TierChoice, request: RoutingInput, token_count: int | None) -> int:
        """Rules 2-5 on `choice`, in place; returns the highest tier the fallbacks may reach."""
        rule = self.long_context
        if (
            token_count is not None
            and rule.threshold_tokens is not None
            and rule.min_tier is not None
            and token_count > rule.threshold_tokens
        ):
            choice.raise_to(self.tier_index(rule.min_tier), LONG_CONTEXT)
        override = self.routes.get(request.route) if request.route else None
        if override is not None:
            if override.tier is not None:
                choice.chosen = self.tier_index(override.tier)
                choice.reasons.append(ROUTE_OVERRIDE)
            if override.min_tier is not None:
                choice.raise_to(self.tier_index(override.min_tier), ROUTE_OVERRIDE)
        if request.min_tier is not None:
            choice.raise_to(self.tier_index(request.min_tier), MIN_TIER)
        ceiling = len(self.tiers) - 1
        if request.max_tier is not None:
            ceiling = self.tier_index(request.max_tier)
            if choice.chosen > ceiling:
                choice.chosen = ceiling
                choice.reasons.append(MAX_TIER)
        if token_count is not None:  # a tier that cannot hold the prompt could only fail, even below max_tier
            holding = self.nearest_tier_holding(choice.chosen, token_count)
            if holding != choice.chosen:
                choice.chosen = holding
                if LONG_CONTEXT not in choice.reasons:
                    choice.reasons.append(LONG_CONTEXT)
            ceiling = max(ceiling, holding)
        return ceiling

    def nearest_tier_holding(self, chosen: int, token_count: int) -> int:
        """The cheapest tier at or above `chosen` whose context holds `token_count` tokens; if none
        does (a stronger tier can have a smaller context), the strongest tier below that does; the
        top tier if no tier can."""
        fits = [token_count <= tier.context_tokens for tier in self.tiers]
        above = [i for i in range(chosen, len(fits)) if fits[i]]
        below = [i for i in range(chosen) if fits[i]]
        return above[0] if above else (below[-1] if below else len(fits) - 1)


async def with_private_data(
    requests: list[RoutingInput], offload_chars: int = OFFLOAD_CHARS
) -> list[RoutingInput]:
    """`requests` with the privacy scan done for texts of `offload_chars` or more, in a worker thread,
    so a large prompt does not hold the event loop; shorter texts are scanned inline by `decide`."""
    out = []
    for request in requests:
        if request.private_data is None and len(request.privacy_text) >= offload_chars:
            kinds = await detect_private_data_async(request.privacy_text, offload_chars)
            request = replace(request, private_data=tuple(kinds))
        out.append(request)
    return out
