"""The per-segment risk controller: judged evidence from the decision log -> a routing setting per segment.

The policy's `segment_control:` section turns it on:

    segment_control:
      max_under_routing: 0.05     # alpha: the under-routing each segment may have (one-sided 95%)
      routes: {checkout: 0.02}    # alpha per route (a route is its own segment)
      confidence: 0.95
      cold_start_margin: 0.05     # added to the model's q while a segment has too few verdicts
      min_judged: null            # null: the fewest verdicts with which a clean record can pass alpha
      judge_error_rate: 0.0       # the shadow judge's measured rate of wrong verdicts, corrected for;
      # judge_false_pass_rate / judge_false_fail_rate: each side on its own, for a judge that errs
      # unevenly (a lenient judge passes bad answers more often than it fails good ones)
      window_hours: 336           # evidence older than this ages out (drift is caught)
      max_judged: 2000            # per segment, the newest verdicts only
      refresh_seconds: 10         # how often each worker re-reads the evidence
      explore_boost: 4.0          # shadow share multiplier for a segment whose bound is not yet tight
      max_segments: 1000          # segments with a state (the most judged); the rest stay in cold start

The statistics are tierwise.core.segment_guard's. The evidence lives in the decision database
(decisions carry their `segment` and calibrated probabilities; shadow verdicts and explicit feedback
are feedback rows), so every worker and replica reads the same evidence, and a restart or a hot
reload loses nothing: the state is a function of the evidence in the window. Each worker refreshes
its snapshot in the background; the request path only reads a dict (no I/O, no lock).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from tierwise.core.escalation import EscalationQ, TierOffsets
from tierwise.core.policy import Policy, SegmentGuard
from tierwise.core.policy_file import section_number
from tierwise.core.scoring import tier_cost_usd
from tierwise.core.segment_guard import (
    GuardConfig,
    SegmentEvidence,
    SegmentState,
    choose_setting,
    under_from_range,
    under_from_verdicts,
)

logger = logging.getLogger("tierwise.segment_control")

KEYS = {
    "max_under_routing",
    "routes",
    "confidence",
    "cold_start_margin",
    "min_judged",
    "judge_error_rate",
    "judge_false_pass_rate",
    "judge_false_fail_rate",
    "window_hours",
    "max_judged",
    "refresh_seconds",
    "explore_boost",
    "max_segments",
}
SECTION = "segment_control"  # the policy section's name
TIER_VERDICTS = (
    "tier_verdicts"  # a shadow feedback row's evidence: {tier: passed} for each tier below the top
)


class SegmentControlError(ValueError):
    """The `segment_control` section is malformed; the message names the key."""


@dataclass(frozen=True)
class SegmentControlConfig:
    guard: GuardConfig
    route_alpha: Mapping[str, float] = field(default_factory=dict)
    window_hours: float = 336.0
    max_judged: int = 2000
    refresh_seconds: float = 10.0
    explore_boost: float = 4.0
    max_segments: int = 1000  # routes are the callers' to choose: the controller's state stays bounded

    def alpha_for(self, segment: str) -> float:
        return self.route_alpha.get(segment, self.guard.alpha)


def _number(
    raw: Mapping[str, Any],
    key: str,
    default: float,
    source: str,
    low: float,
    high: float,
    where: str = SECTION,
) -> float:
    return section_number(raw, key, default, where, source, low, high, SegmentControlError)


def _optional_rate(raw: Mapping[str, Any], key: str, source: str) -> float | None:
    return None if raw.get(key) is None else _number(raw, key, 0.0, source, 0.0, 0.45)


def parse_segment_control(raw: Any, source: str) -> SegmentControlConfig | None:
    """The controller's settings, or None when the section is absent (the controller is off)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or "max_under_routing" not in raw:
        raise SegmentControlError(f"{source}: segment_control needs `max_under_routing` (alpha, e.g. 0.05)")
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise SegmentControlError(
            f"{source}: segment_control has unknown key(s) {unknown}; known: {sorted(KEYS)}"
        )
    alpha = _number(raw, "max_under_routing", 0.05, source, 1e-4, 0.5)
    routes = raw.get("routes") or {}
    if not isinstance(routes, Mapping):
        raise SegmentControlError(f"{source}: segment_control.routes must map a route to its alpha")
    route_alpha = {str(r): _number(routes, r, alpha, source, 1e-4, 0.5, f"{SECTION}.routes") for r in routes}
    min_judged = raw.get("min_judged")
    guard = GuardConfig(
        alpha=alpha,
        confidence=_number(raw, "confidence", 0.95, source, 0.5, 0.999),
        cold_start_margin=_number(raw, "cold_start_margin", 0.05, source, 0.0, 1.0),
        min_judged=None if min_judged is None else int(_number(raw, "min_judged", 0, source, 1, 1e9)),
        judge_error_rate=_number(raw, "judge_error_rate", 0.0, source, 0.0, 0.45),
        judge_false_pass_rate=_optional_rate(raw, "judge_false_pass_rate", source),
        judge_false_fail_rate=_optional_rate(raw, "judge_false_fail_rate", source),
    )
    return SegmentControlConfig(
        guard=guard,
        route_alpha=route_alpha,
        window_hours=_number(raw, "window_hours", 336.0, source, 0.01, 1e6),
        max_judged=int(_number(raw, "max_judged", 2000, source, 10, 1e7)),
        refresh_seconds=_number(raw, "refresh_seconds", 10.0, source, 0.0, 86400.0),
        explore_boost=_number(raw, "explore_boost", 4.0, source, 1.0, 100.0),
        max_segments=int(_number(raw, "max_segments", 1000, source, 1, 1e6)),
    )


def load_segment_control(policy_file: Any) -> SegmentControlConfig | None:
    """The `segment_control` section of a policy YAML file (read apart from `load_policy`)."""
    import yaml

    raw = yaml.safe_load(Path(policy_file).read_text(encoding="utf-8")) or {}
    section = raw.get(SECTION) if isinstance(raw, Mapping) else None
    return parse_segment_control(section, str(policy_file))


@dataclass(frozen=True)
class JudgedRow:
    """One judged decision of a segment, as read from the decision log."""

    segment: str
    probabilities: Mapping[str, float]
    high_tier: str | None  # the highest tier the outcome allows (None: the outcome cannot be placed)
    tier_verdicts: Mapping[str, bool] | None  # a shadow judge's verdict per tier below the top


def segment_evidence(rows: Sequence[JudgedRow], tier_names: Sequence[str]) -> dict[str, SegmentEvidence]:
    """Evidence arrays per segment; rows without probabilities or a placeable outcome are skipped."""
    below = list(tier_names[:-1])
    grouped: dict[str, tuple[list[list[float]], list[np.ndarray], list[bool]]] = {}
    for row in rows:
        if not row.probabilities or any(t not in row.probabilities for t in tier_names):
            continue
        if row.tier_verdicts is not None and all(t in row.tier_verdicts for t in below):
            under, noisy = under_from_verdicts([bool(row.tier_verdicts[t]) for t in below]), True
        elif row.high_tier is not None and row.high_tier in tier_names:
            under, noisy = under_from_range(list(tier_names).index(row.high_tier), len(tier_names)), False
        else:
            continue
        probs, unders, noisies = grouped.setdefault(row.segment, ([], [], []))
        probs.append([float(row.probabilities[t]) for t in tier_names])
        unders.append(under)
        noisies.append(noisy)
    return {
        segment: SegmentEvidence(np.asarray(p, dtype=np.float64), np.asarray(u, dtype=bool), np.asarray(n))
        for segment, (p, u, n) in grouped.items()
    }


# (since, newest per segment, the serving model version) -> the judged rows
EvidenceReader = Callable[[datetime, int, str | None], Sequence[JudgedRow]]


def _fingerprint(evidence: SegmentEvidence) -> tuple[Any, ...]:
    """What the state depends on: a digest of the evidence arrays (read in a fixed order)."""
    digest = hashlib.blake2b(digest_size=16)
    for array in (evidence.probabilities, evidence.under, evidence.noisy):
        digest.update(np.ascontiguousarray(array).tobytes())
    return (evidence.judged, digest.digest())


class SegmentController:
    """Per-segment states from the evidence, refreshed in the background; `guard()` is what routing reads."""

    def __init__(
        self,
        config: SegmentControlConfig,
        read_evidence: EvidenceReader,
        tier_names: Sequence[str],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_refresh: Callable[[Mapping[str, SegmentState]], None] | None = None,
        tier_costs: Sequence[float] | None = None,
    ) -> None:
        self.config = config
        self.tier_costs = tuple(tier_costs) if tier_costs is not None else None  # a request's cost per tier
        self.read_evidence = read_evidence
        self.tier_names = tuple(tier_names)
        self.clock = clock
        self.on_refresh = on_refresh
        self.model: tuple[EscalationQ, tuple[float, ...], str | None] | None = None  # set_model()
        self.states: Mapping[str, SegmentState] = {}  # replaced whole on refresh: readers need no lock
        self.refreshed_at: datetime | None = None
        self.refresh_errors = 0
        # A segment whose evidence and target did not change since the last refresh keeps its state.
        self._known: dict[str, tuple[tuple[Any, ...], SegmentState]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refresh_lock = threading.Lock()

    def set_model(self, model_q: EscalationQ, offsets: TierOffsets, model_version: str | None = None) -> None:
        """The q (the policy's or the model's) and tier offsets the settings shift, and the version
        whose decisions are the evidence; on start and reload (a new version starts in cold start)."""
        self.model = (model_q, tuple(float(o) for o in offsets) if offsets is not None else (), model_version)

    # --- the request path -------------------------------------------------------------------

    def state(self, segment: str | None) -> SegmentState | None:
        return None if segment is None else self.states.get(segment)

    def guard(self, segment: str | None) -> SegmentGuard:
        """The segment's setting: its state's, or the cold start for a segment with no evidence yet."""
        if segment is None:
            return SegmentGuard(None)
        state = self.states.get(segment)
        if state is None:
            return SegmentGuard(segment, self.config.guard.cold_start(), None)
        return SegmentGuard(segment, state.setting, state.bound)

    def shadow_share(self, segment: str | None, base: float) -> float:
        """The shadow sampling share for a segment: boosted while its evidence cannot yet tell (cold
        start; `top_only`, where only more verdicts can certify a cheaper setting; a certified bound more
        than alpha/2 above its estimate), the base share otherwise."""
        state = self.state(segment)
        if state is not None and state.status == "certified" and state.bound is not None:
            width = state.bound - (state.estimate or 0.0)
            if width <= state.alpha / 2:
                return base
            boost = min(self.config.explore_boost, width / (state.alpha / 2))
            return min(1.0, base * boost)
        return min(1.0, base * self.config.explore_boost)

    # --- refreshing -------------------------------------------------------------------------

    def refresh(self) -> Mapping[str, SegmentState]:
        """Read the evidence of the window and recompute every segment's state."""
        model = self.model  # one snapshot: a reload may call set_model meanwhile
        if model is None:
            raise RuntimeError("segment control: set_model(q, offsets, version) before refreshing")
        model_q, offsets, version = model[0], (model[1] or None), model[2]
        with self._refresh_lock:
            now = self.clock()
            since = now - timedelta(hours=self.config.window_hours)
            rows = self.read_evidence(since, self.config.max_judged, version)
            evidence = segment_evidence(rows, self.tier_names)
            if len(evidence) > self.config.max_segments:
                logger.warning(
                    "segment control: %d segments have evidence; the %d most judged get a state, the rest "
                    "stay in cold start (raise segment_control.max_segments, or send fewer distinct routes)",
                    len(evidence),
                    self.config.max_segments,
                )
                kept = sorted(evidence, key=lambda s: (-evidence[s].judged, s))[: self.config.max_segments]
                evidence = {segment: evidence[segment] for segment in kept}
            states = {}
            for segment, judged in sorted(evidence.items()):
                alpha = self.config.alpha_for(segment)
                key = (*_fingerprint(judged), model_q, offsets, alpha)
                known = self._known.get(segment)
                if known is None or known[0] != key:
                    state = choose_setting(
                        segment, judged, model_q, offsets, self.config.guard, alpha, self.tier_costs
                    )
                    known = self._known[segment] = (key, state)
                states[segment] = known[1]
            self._known = {segment: self._known[segment] for segment in states}
            self.states = states
            self.refreshed_at = now
        if self.on_refresh is not None:
            self.on_refresh(states)
        return states

    def start(self) -> SegmentController:
        """Refresh once now, then every `refresh_seconds` in a daemon thread (0: only on demand)."""
        self._safe_refresh()
        if self.config.refresh_seconds > 0:
            self._thread = threading.Thread(target=self._run, name="tierwise-segment-control", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.config.refresh_seconds):
            self._safe_refresh()

    def refresh_safely(self) -> None:
        self._safe_refresh()

    def _safe_refresh(self) -> None:
        """A refresh that fails keeps the last states (and counts): the database may be briefly away."""
        started = time.perf_counter()
        try:
            self.refresh()
        except Exception as err:
            self.refresh_errors += 1
            logger.error("segment control: refresh failed, keeping the last states: %s", err)
            return
        logger.debug("segment control refreshed", extra={"ms": (time.perf_counter() - started) * 1000})


REFERENCE_INPUT_TOKENS = 500  # the request size the controller compares settings' costs at


def open_segment_control(
    policy_file: Any,
    policy: Policy,
    read_evidence: EvidenceReader | None,
    on_refresh: Callable[[Mapping[str, SegmentState]], None] | None = None,
) -> SegmentController | None:
    """The (not yet started) controller when the policy has a `segment_control` section.
    `read_evidence`: the decision log's judged decisions (tierwise.evidence.segment_evidence); None
    when the service records no decisions."""
    config = load_segment_control(policy_file)
    if config is None:
        return None
    if read_evidence is None:
        raise SegmentControlError(
            f"{policy_file}: segment_control needs the decision log for its evidence; set "
            "TIERWISE_RECORD_DECISIONS=true (and TIERWISE_DECISION_DB), or remove the section"
        )
    return SegmentController(
        config,
        read_evidence,
        policy.tier_names,
        on_refresh=on_refresh,
        tier_costs=policy_tier_costs(policy),
    )


def policy_tier_costs(policy: Policy) -> list[float]:
    """A request's cost per tier at the policy's prices: what the controller compares settings by."""
    return [tier_cost_usd(policy, name, REFERENCE_INPUT_TOKENS) for name in policy.tier_names]
