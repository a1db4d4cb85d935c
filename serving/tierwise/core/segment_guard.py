"""Per-segment risk control: the cheapest routing setting whose under-routing is bounded on the
segment's own judged traffic. Pure numbers; the controller that feeds it evidence from the decision
log is tierwise.evidence.segment_control.

A *segment* is the caller's `route`, else an automatic segment (tierwise.core.segments). For each one
a user's quality target `alpha` (`max_under_routing`) must hold: the share of the segment's requests
routed to a tier below the one they need.

The knob is a *setting* on one ordered path, from the safest to the cheapest:
- `top_only`: every request of the segment goes to the top tier (under-routing is then 0 by definition);
- then the model's own thresholds shifted by `delta`, from +0.25 down to -0.75: q[t] + delta, clipped
  to [0, 1], for every tier boundary t; a request goes to the lowest tier whose cumulative probability
  reaches its threshold. A higher q escalates more. The model's own rule also keeps a request at or
  above its (offset) most likely tier: that floor was chosen on public data for accuracy, not risk,
  and it would stop a segment that evidence shows to be easy from ever reaching the cheap tier, so the
  path's settings go by the thresholds alone. The cold start keeps the model's rule, floor included.

Evidence is judged requests, sampled uniformly within the segment: per request its logged calibrated
probabilities (K,) and, per tier below the top, whether that tier would have under-routed it
(`under`, (K-1,)). A shadow verdict judges every tier below the top (noisy: the judge errs at a known
rate e); explicit feedback gives a range of needed tiers, and a tier the range cannot place counts as
under-routed (conservative). For any setting the logged probabilities give the tier each judged
request would have got, so the risk of every setting on the path is counted on the same requests.

The bound: k = judged requests the setting routes below the top tier *and* whose tier under-routes
them, n = judged requests. U = the one-sided Clopper-Pearson upper bound of k/n at `confidence`.
With m judge verdicts among the requests routed below the top, and a judge that fails a good answer
with probability b and passes a bad one with probability a, E[k/n] = b*m/n + (1-a-b)*risk, so the
risk's bound is (U - b*m/n) / (1 - a - b) (explicit feedback, noiseless, is then over-counted:
conservative). a = b = `judge_error_rate` unless the policy gives each side; they must be measured
(on requests a person labeled), and an underestimated a makes the bound too low.
Settings are tested in path order (fixed-sequence testing, so no multiplicity correction is needed)
and the last one whose bound is <= alpha before the first that fails is chosen: the cheapest setting
the evidence supports. `top_only` needs no test. The controller repeats this on a moving window
every few seconds: each choice holds at `confidence` for the evidence it saw, but choosing again and
again is a form of peeking, so over a long run the chance that some choice was wrong is above
1 - confidence (ageing and `make replay` watch it; nothing here proves it away).

A segment with few verdicts is in cold start: the model's own rule, q raised by a margin. By default
that lasts until a clean record could pass alpha at all (`clean_record_judged`: 59 verdicts at 5% and
95%, 220 with a judge wrong 10% of the time; or `min_judged`), unless the evidence already certifies
a setting no dearer than the cold start (taken at once) or shows the cold start breaking alpha (its
one-sided lower bound above it: the fixed sequence decides at once).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tierwise.core.escalation import (
    EscalationQ,
    TierOffsets,
    boundary_thresholds,
    cumulative_confidence,
    route_upward,
)

SEGMENT_GUARD = "segment_guard"  # the reason on an answer the segment's setting sent higher

DELTA_HIGH, DELTA_LOW, DELTA_STEP = 0.25, -0.75, 0.025
DELTAS: tuple[float, ...] = tuple(
    round(DELTA_HIGH - i * DELTA_STEP, 4) for i in range(round((DELTA_HIGH - DELTA_LOW) / DELTA_STEP) + 1)
)

GuardStatus = Literal["cold_start", "certified", "top_only"]


@dataclass(frozen=True)
class GuardSetting:
    """One point of the path: every request to the top tier, or the model's q shifted by `delta`."""

    top_only: bool = False
    delta: float = 0.0
    floor: bool = False  # also never below the (offset) most likely tier, as the model's own rule

    def thresholds(self, model_q: EscalationQ, n_tiers: int) -> tuple[float, ...]:
        """The q per tier boundary this setting routes with (K - 1,)."""
        shifted = np.clip(boundary_thresholds(model_q, n_tiers) + self.delta, 0.0, 1.0)
        return tuple(float(v) for v in shifted)

    def label(self) -> str:
        return "top_only" if self.top_only else f"q{self.delta:+.3f}{' (floor)' if self.floor else ''}"


PATH: tuple[GuardSetting, ...] = (GuardSetting(top_only=True), *(GuardSetting(delta=d) for d in DELTAS))


@dataclass(frozen=True)
class GuardConfig:
    """The targets and the statistics of the controller (the policy's `segment_control` section)."""

    alpha: float = 0.05
    confidence: float = 0.95
    cold_start_margin: float = 0.05
    min_judged: int | None = None  # None: the fewest verdicts with which a clean record can pass alpha
    judge_error_rate: float = 0.0  # a judge wrong this often either way (the shorthand)
    # A judge errs unevenly: LLM judges are often lenient (pass a tier that failed). Either rate, when
    # set, replaces `judge_error_rate` on its side.
    judge_false_pass_rate: float | None = None
    judge_false_fail_rate: float | None = None

    @property
    def false_pass(self) -> float:
        return self.judge_error_rate if self.judge_false_pass_rate is None else self.judge_false_pass_rate

    @property
    def false_fail(self) -> float:
        return self.judge_error_rate if self.judge_false_fail_rate is None else self.judge_false_fail_rate

    def cold_start(self) -> GuardSetting:
        """The model's own rule, its threshold raised by the margin."""
        return GuardSetting(delta=self.cold_start_margin, floor=True)

    def required_judged(self, alpha: float) -> int:
        """`min_judged`, or the fewest verdicts with which a clean record (no request under-routed, the
        judge wrong at its error rate) can pass alpha: before that, no evidence could certify anything.
        Without judge noise, n with (1 - alpha)^n <= 1 - confidence (59 at 5% and 95%)."""
        if self.min_judged is not None:
            return self.min_judged
        return clean_record_judged(alpha, self.confidence, self.false_fail, self.false_pass)


@dataclass(frozen=True)
class SegmentEvidence:
    """The judged requests of one segment. probabilities (n, K); under (n, K-1): tier t would have
    under-routed the request; noisy (n,): the row is a judge's verdict (errs at the judge's rate)."""

    probabilities: np.ndarray
    under: np.ndarray
    noisy: np.ndarray

    @property
    def judged(self) -> int:
        return int(self.probabilities.shape[0])

    @classmethod
    def empty(cls, n_tiers: int) -> SegmentEvidence:
        return cls(np.zeros((0, n_tiers)), np.zeros((0, n_tiers - 1), dtype=bool), np.zeros(0, dtype=bool))


@dataclass(frozen=True)
class SegmentState:
    """What the controller decided for one segment, and on what evidence."""

    segment: str
    status: GuardStatus
    setting: GuardSetting
    alpha: float
    judged: int
    under_routed: int  # k at the chosen setting (raw counts, judge noise included)
    estimate: float | None  # the noise-corrected under-routing at the chosen setting
    bound: float | None  # its one-sided upper bound at `confidence`; None in cold start


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < eps:
            break
    return fraction


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function (the CDF of Beta(a, b) at x)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


@functools.lru_cache(maxsize=65536)
def clopper_pearson_upper(k: int, n: int, confidence: float = 0.95) -> float:
    """The one-sided exact upper bound of a proportion: the p with P(X <= k | n, p) = 1 - confidence,
    i.e. the `confidence` quantile of Beta(k + 1, n - k)."""
    if n <= 0 or k >= n:
        return 1.0
    low, high = k / n, 1.0
    for _ in range(50):  # bisection to ~1e-15
        middle = (low + high) / 2
        if regularized_beta(k + 1, n - k, middle) < confidence:
            low = middle
        else:
            high = middle
    return high


@functools.lru_cache(maxsize=256)
def clean_record_judged(
    alpha: float, confidence: float, false_fail: float, false_pass: float | None = None
) -> int:
    """The fewest n with which a segment that is never under-routed, read through a judge that fails a
    good answer `false_fail` of the time (round(false_fail * n) wrong verdicts), gets a corrected bound
    <= alpha (search up to 10^6)."""

    def passes(n: int) -> bool:
        upper = clopper_pearson_upper(round(false_fail * n), n, confidence)
        return corrected(upper, 1.0, false_fail, false_pass) <= alpha

    if false_fail <= 0.0 and not false_pass:
        return math.ceil(math.log(1.0 - confidence) / math.log(1.0 - alpha))
    high = 1
    while not passes(high):
        high *= 2
        if high > 1_000_000:
            return high
    low = high // 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if passes(middle) else (middle, high)
    return high


def corrected(rate: float, noisy_share: float, false_fail: float, false_pass: float | None = None) -> float:
    """A rate of "the tier failed" verdicts, `noisy_share` of them from a judge that fails a good answer
    `false_fail` of the time and passes a bad one `false_pass` of the time (default: as often), back on
    the true scale: E[observed] = false_fail * share + (1 - false_pass - false_fail) * true."""
    false_pass = false_fail if false_pass is None else false_pass
    if false_fail <= 0.0 and false_pass <= 0.0:
        return rate
    return max(0.0, (rate - false_fail * noisy_share) / (1.0 - false_pass - false_fail))


def setting_tiers(
    setting: GuardSetting, probabilities: np.ndarray, model_q: EscalationQ, offsets: TierOffsets
) -> np.ndarray:
    """The tier index each request gets under `setting` (the policy routes with this too). (n, K) -> (n,)"""
    n, n_tiers = probabilities.shape
    if setting.top_only or n == 0:
        return np.full(n, n_tiers - 1, dtype=np.int64)
    thresholds = setting.thresholds(model_q, n_tiers)
    if setting.floor:
        return route_upward(probabilities, thresholds, offsets)
    cumulative = cumulative_confidence(probabilities)
    meets = np.concatenate(
        [cumulative[:, :-1] >= np.asarray(thresholds) - 1e-12, np.ones((n, 1), dtype=bool)], axis=1
    )  # the top tier always qualifies
    return np.argmax(meets, axis=1)


def risk_counts(
    evidence: SegmentEvidence, setting: GuardSetting, model_q: EscalationQ, offsets: TierOffsets
) -> tuple[int, int]:
    """(k, m): judged requests the setting under-routes, and verdicts of the judge among those it
    routes below the top tier."""
    tiers = setting_tiers(setting, evidence.probabilities, model_q, offsets)
    below = tiers < evidence.probabilities.shape[1] - 1
    if not below.any():
        return 0, 0
    rows = np.flatnonzero(below)
    k = int(evidence.under[rows, tiers[rows]].sum())
    m = int(evidence.noisy[rows].sum())
    return k, m


def bound_of(k: int, m: int, n: int, config: GuardConfig) -> tuple[float, float]:
    """(estimate, upper bound) of the under-routing rate from k failures, m noisy verdicts, n judged."""
    if n == 0:
        return 0.0, 1.0
    estimate = corrected(k / n, m / n, config.false_fail, config.false_pass)
    upper = corrected(
        clopper_pearson_upper(k, n, config.confidence), m / n, config.false_fail, config.false_pass
    )
    return estimate, min(1.0, upper)


def choose_setting(
    segment: str,
    evidence: SegmentEvidence,
    model_q: EscalationQ,
    offsets: TierOffsets,
    config: GuardConfig,
    alpha: float | None = None,
    tier_costs: Sequence[float] | None = None,
) -> SegmentState:
    """The cheapest setting on PATH whose bound stays <= alpha, tested in order (fixed sequence).
    While the segment has fewer than the required verdicts it stays in cold start, unless the evidence
    already certifies a setting no dearer than the cold start on the segment's requests (`tier_costs`:
    the cost of a request per tier, default 10^tier), or shows the cold start breaking alpha."""
    alpha = config.alpha if alpha is None else alpha
    n = evidence.judged
    if n == 0:
        return SegmentState(segment, "cold_start", config.cold_start(), alpha, 0, 0, None, None)
    certified = _fixed_sequence(segment, evidence, model_q, offsets, config, alpha)
    if n < config.required_judged(alpha):
        setting = config.cold_start()
        k, m = risk_counts(evidence, setting, model_q, offsets)
        costs = np.asarray(
            tier_costs if tier_costs is not None else [10.0**t for t in range(_tiers(evidence))]
        )
        if certified.status == "certified":
            dearer = setting_tiers(certified.setting, evidence.probabilities, model_q, offsets)
            cold = setting_tiers(setting, evidence.probabilities, model_q, offsets)
            if costs[dearer].sum() <= costs[cold].sum():
                return certified  # lowered by evidence
        lower = 1.0 - clopper_pearson_upper(n - k, n, config.confidence)
        if corrected(lower, m / n, config.false_fail, config.false_pass) <= alpha:
            estimate = bound_of(k, m, n, config)[0]
            return SegmentState(segment, "cold_start", setting, alpha, n, k, estimate, None)
        # Too few verdicts to certify anything cheaper, but enough to show that the cold start breaks
        # alpha (its one-sided lower bound is above it): leave the cold start now.
    return certified


def _tiers(evidence: SegmentEvidence) -> int:
    return int(evidence.probabilities.shape[1]) if evidence.probabilities.ndim == 2 else 1


def _fixed_sequence(
    segment: str,
    evidence: SegmentEvidence,
    model_q: EscalationQ,
    offsets: TierOffsets,
    config: GuardConfig,
    alpha: float,
) -> SegmentState:
    """The last setting of PATH whose bound is <= alpha before the first that is not (top_only if none)."""
    n = evidence.judged
    chosen = SegmentState(segment, "top_only", PATH[0], alpha, n, 0, 0.0, 0.0)
    for setting in PATH[1:]:
        k, m = risk_counts(evidence, setting, model_q, offsets)
        if corrected(k / n, m / n, config.false_fail, config.false_pass) > alpha:
            break  # the bound is above the estimate: no need to compute it
        estimate, upper = bound_of(k, m, n, config)
        if upper > alpha:
            break
        chosen = SegmentState(segment, "certified", setting, alpha, n, k, estimate, upper)
    return chosen


def under_from_range(high: int, n_tiers: int) -> np.ndarray:
    """(K-1,) under-routed at tier t, from a needed-tier range whose highest tier is `high` (an index):
    t under-routes unless the range shows the needed tier is at most t (a range across t counts as
    under-routed)."""
    return np.array([not high <= t for t in range(n_tiers - 1)], dtype=bool)


def under_from_verdicts(passed: Sequence[bool]) -> np.ndarray:
    """(K-1,) under-routed at tier t from a judge's pass/fail of each tier below the top."""
    return np.array([not p for p in passed], dtype=bool)
