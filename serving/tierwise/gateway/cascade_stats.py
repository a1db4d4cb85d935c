"""What a gateway's cascade measures: retries by tier and reason, check outcomes per tier, cost per
successful response, the latency the cascade added, and per-segment failure rates (which decide when
the judge grades every answer of a segment).

The counts live in this process (`CascadeStats.snapshot()`), and, when prometheus-client is installed,
are mirrored to its default registry, which the LiteLLM proxy serves at /metrics with its
`prometheus` callback:

- `tierwise_gateway_cascade_retries_total{from_tier,reason}`
- `tierwise_gateway_cascade_checks_total{tier,outcome}` (outcome passed | failed: success rate per tier)
- `tierwise_gateway_cascade_responses_total{result}` and `tierwise_gateway_cascade_cost_usd_total{result}`
  (result success | failed: cost per successful response = sum(cost) / responses{result="success"})
- `tierwise_gateway_cascade_added_seconds{retried}` (histogram)

The service counts the retries it hears of through feedback as `tierwise_cascade_retries_total`.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict, deque
from collections.abc import Collection
from typing import Any, Protocol

from tierwise.gateway.cascade_config import JUDGE_WINDOW

ADDED_SECONDS_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
KEPT_LATENCIES = 10_000  # added latencies kept for percentiles (the last ones)


class _Outcome(Protocol):
    attempts: list[Any]
    added_ms: float
    spent_usd: float

    @property
    def passed(self) -> bool: ...


_PROMETHEUS: dict[str, Any] = {}
_PROMETHEUS_LOCK = threading.Lock()


def prometheus_metrics() -> dict[str, Any]:
    """The gateway's cascade metrics in prometheus-client's default registry (made once per process);
    empty without prometheus-client."""
    with _PROMETHEUS_LOCK:
        if _PROMETHEUS:
            return _PROMETHEUS
        try:
            import prometheus_client as p
        except ImportError:
            return _PROMETHEUS
        prefix = "tierwise_gateway_cascade"
        _PROMETHEUS.update(
            retries=p.Counter(f"{prefix}_retries", "Cascade retries one tier up", ("from_tier", "reason")),
            checks=p.Counter(f"{prefix}_checks", "Checked answers by tier and outcome", ("tier", "outcome")),
            responses=p.Counter(f"{prefix}_responses", "Cascaded responses by result", ("result",)),
            cost=p.Counter(f"{prefix}_cost_usd", "Estimated spend of cascaded responses", ("result",)),
            added=p.Histogram(
                f"{prefix}_added_seconds",
                "Latency the cascade added (checks, judge, retries)",
                ("retried",),
                buckets=ADDED_SECONDS_BUCKETS,
            ),
        )
        return _PROMETHEUS


OTHER_ROUTE = "-"  # the segment of every route the policy does not define (and of no route)


class CascadeStats:
    """Thread-safe counts of one gateway's cascade. A segment is (route, tier) for the `routes` the
    policy defines; a request's route is the caller's to name, so any other shares one segment per
    tier (OTHER_ROUTE), and the segments stay as many as the policy's routes times its tiers. Its
    failure rate is over the last `window` answers (the policy's `judge.window`: `Cascade` passes it)."""

    def __init__(
        self, window: int = JUDGE_WINDOW, prometheus: bool = False, routes: Collection[str] = ()
    ) -> None:
        self.window = window
        self.routes = frozenset(routes)
        self._lock = threading.Lock()
        self.retries: Counter[tuple[str, str]] = Counter()  # (from_tier, reason)
        self.checks: Counter[tuple[str, str]] = Counter()  # (tier, passed | failed)
        self.responses: Counter[str] = Counter()  # success | failed
        self.cost_usd: dict[str, float] = defaultdict(float)  # by result
        self.feedback: Counter[str] = Counter()  # sent | failed
        self.added_ms: dict[bool, deque[float]] = {
            True: deque(maxlen=KEPT_LATENCIES),
            False: deque(maxlen=KEPT_LATENCIES),
        }
        self._segments: dict[tuple[str, str], deque[bool]] = {}
        self._prometheus = prometheus_metrics() if prometheus else {}

    def _segment(self, route: str | None, tier: str | None) -> tuple[str, str]:
        return (route if route in self.routes else OTHER_ROUTE, tier or "-")

    def observe_check(self, route: str | None, tier: str | None, passed: bool) -> None:
        key = self._segment(route, tier)
        with self._lock:
            self.checks[(key[1], "passed" if passed else "failed")] += 1
            self._segments.setdefault(key, deque(maxlen=self.window)).append(passed)
        if self._prometheus:
            self._prometheus["checks"].labels(key[1], "passed" if passed else "failed").inc()

    def segment_failure_rate(self, route: str | None, tier: str | None, min_answers: int) -> float | None:
        """The failure rate of the last answers of (route, tier); None with fewer than `min_answers`."""
        with self._lock:
            outcomes = list(self._segments.get(self._segment(route, tier), ()))
        if len(outcomes) < max(1, min_answers):
            return None
        return 1.0 - sum(outcomes) / len(outcomes)

    def observe_outcome(self, outcome: _Outcome) -> None:
        result = "success" if outcome.passed else "failed"
        retried = len(outcome.attempts) > 1
        with self._lock:
            for attempt in outcome.attempts:
                if attempt.next_tier is not None:
                    self.retries[(str(attempt.tier), str(attempt.reason))] += 1
            self.responses[result] += 1
            self.cost_usd[result] += outcome.spent_usd
            self.added_ms[retried].append(outcome.added_ms)
        if self._prometheus:
            for attempt in outcome.attempts:
                if attempt.next_tier is not None:
                    self._prometheus["retries"].labels(str(attempt.tier), str(attempt.reason)).inc()
            self._prometheus["responses"].labels(result).inc()
            self._prometheus["cost"].labels(result).inc(outcome.spent_usd)
            self._prometheus["added"].labels(str(retried).lower()).observe(outcome.added_ms / 1000)

    def observe_feedback(self, outcome: str) -> None:
        with self._lock:
            self.feedback[outcome] += 1

    def snapshot(self) -> dict[str, Any]:
        """The counts so far, with success rate per tier and cost per successful response."""
        with self._lock:
            tiers = sorted({tier for tier, _ in self.checks})
            success = self.responses["success"]
            return {
                "retries": {f"{t}:{r}": n for (t, r), n in sorted(self.retries.items())},
                "success_rate_per_tier": {
                    t: self.checks[(t, "passed")] / (self.checks[(t, "passed")] + self.checks[(t, "failed")])
                    for t in tiers
                },
                "responses": dict(self.responses),
                "cost_per_success_usd": (sum(self.cost_usd.values()) / success) if success else None,
                "feedback": dict(self.feedback),
            }
