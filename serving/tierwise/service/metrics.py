"""Prometheus metrics through `prometheus-client`, correct with several uvicorn workers.

With one process the metrics live in memory (a registry per app). With several workers
(`TIERWISE_WORKERS` > 1) `serve()` points `PROMETHEUS_MULTIPROC_DIR` at a fresh folder before the
workers start: each worker writes its values to files there, and a scrape of any worker sums the
counters and histograms of all workers, dead ones included (totals never go back). Gauges keep the
values of live workers only: a worker marks itself dead when it stops, and a starting worker marks
workers that vanished without stopping (killed).

The call sites use a small interface (`inc(*labels)`, `observe(value, *labels)`, `set(value, *labels)`)
so that the metric names and labels stay those of the hand-written exposition this replaced.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import prometheus_client
from prometheus_client import CollectorRegistry, generate_latest, multiprocess

from tierwise.core.policy import DECIDED_BY_ENCODER
from tierwise.core.segment_guard import SegmentState
from tierwise.service.worker_sync import process_alive

# Read when prometheus_client decides, at its import, whether values go to files: from then on fixed.
MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
# No `_created` series: they exist in one process only and would make the two modes differ.
prometheus_client.disable_created_metrics()

LabelValues = tuple[str, ...]


class Counter:
    def __init__(
        self,
        name: str,
        help_text: str,
        label_names: Sequence[str] = (),
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name, self.label_names = name, tuple(label_names)
        self._metric = prometheus_client.Counter(name, help_text, self.label_names, registry=registry)

    def _child(self, label_values: LabelValues) -> prometheus_client.Counter:
        return self._metric.labels(*label_values) if self.label_names else self._metric

    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        self._child(label_values).inc(amount)

    def value(self, *label_values: str) -> float:
        """This process's count."""
        return float(self._child(label_values)._value.get())


class Histogram:
    def __init__(
        self,
        name: str,
        help_text: str,
        buckets: Sequence[float],
        label_names: Sequence[str] = (),
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name, self.label_names = name, tuple(label_names)
        self.buckets = tuple(sorted(buckets))
        self._metric = prometheus_client.Histogram(
            name, help_text, self.label_names, buckets=self.buckets, registry=registry
        )
        self._counts: dict[LabelValues, int] = {}

    def observe(self, value: float, *label_values: str) -> None:
        (self._metric.labels(*label_values) if self.label_names else self._metric).observe(value)
        self._counts[label_values] = self._counts.get(label_values, 0) + 1

    def count(self, *label_values: str) -> int:
        """Observations in this process."""
        return self._counts.get(label_values, 0)


# How a scrape combines the workers' values of a gauge (prometheus-client's multiprocess_mode).
MultiprocessMode = Literal[
    "all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum", "mostrecent", "livemostrecent"
]


class Gauge:
    """`mode`: how a scrape combines workers (prometheus-client's multiprocess_mode), e.g.
    `livemostrecent` (the latest value of a live worker) or `liveall` (one series per live worker)."""

    def __init__(
        self,
        name: str,
        help_text: str,
        label_names: Sequence[str] = (),
        registry: CollectorRegistry | None = None,
        mode: MultiprocessMode = "livemostrecent",
    ) -> None:
        self.name, self.label_names = name, tuple(label_names)
        self._metric = prometheus_client.Gauge(
            name, help_text, self.label_names, registry=registry, multiprocess_mode=mode
        )
        self._values: dict[LabelValues, float] = {}

    def set(self, value: float, *label_values: str) -> None:
        (self._metric.labels(*label_values) if self.label_names else self._metric).set(value)
        self._values[label_values] = float(value)

    def clear(self, *label_values: str) -> None:
        """Drop a series (with several workers: set it to 0, as files cannot drop it)."""
        if label_values not in self._values:
            return
        del self._values[label_values]
        if MULTIPROC_DIR:
            self._metric.labels(*label_values).set(0)
        else:
            self._metric.remove(*label_values)

    def value(self, *label_values: str) -> float | None:
        return self._values.get(label_values)


class Info:
    """`<name>_info{labels} 1`; with several workers one series per live worker (a `pid` label), so a
    scrape shows which version each worker serves."""

    def __init__(self, name: str, help_text: str, registry: CollectorRegistry | None = None) -> None:
        self.name, self.help_text, self.registry = name, help_text, registry
        self._gauge: Gauge | None = None
        self._labels: dict[str, str] = {}

    def set(self, **labels: str) -> None:
        labels = dict(sorted(labels.items()))
        if self._gauge is None:
            self._gauge = Gauge(f"{self.name}_info", self.help_text, tuple(labels), self.registry, "liveall")
        elif tuple(labels) != self._gauge.label_names:
            raise ValueError(f"{self.name} labels are {self._gauge.label_names}, got {tuple(labels)}")
        if self._labels and self._labels != labels:
            self._gauge.clear(*self._labels.values())
        self._gauge.set(1, *labels.values())
        self._labels = labels


# -- several workers ---------------------------------------------------------------------------------

_DB_PID = re.compile(r"_(\d+)\.db$")


def prepare_multiprocess_dir(workers: int) -> Path | None:
    """In the main process before the workers start: with several workers, a fresh folder for their
    metric files in PROMETHEUS_MULTIPROC_DIR (the one given there, emptied, or a new temporary one).
    None with one worker. The workers inherit the variable."""
    if workers <= 1:
        return None
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):  # counts of an earlier run would be added to this one's
            stale.unlink()
    else:
        folder = Path(tempfile.mkdtemp(prefix="tierwise-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    return folder


def remove_multiprocess_dir(folder: Path | None) -> None:
    """After the workers have stopped: remove a folder `prepare_multiprocess_dir` created."""
    if folder is not None and folder.name.startswith("tierwise-metrics-"):
        shutil.rmtree(folder, ignore_errors=True)


def mark_dead_workers() -> None:
    """In a starting worker: drop the live gauges of workers that are gone (killed, never stopped)."""
    if not MULTIPROC_DIR:
        return
    for path in Path(MULTIPROC_DIR).glob("gauge_live*_*.db"):
        match = _DB_PID.search(path.name)
        if match and not process_alive(int(match.group(1))):
            multiprocess.mark_process_dead(int(match.group(1)), MULTIPROC_DIR)


def mark_this_worker_dead() -> None:
    """In a stopping worker: its live gauges leave the scrape; its counters stay in the totals."""
    if MULTIPROC_DIR:
        multiprocess.mark_process_dead(os.getpid(), MULTIPROC_DIR)


LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
MAX_SEGMENT_LABELS = 100  # distinct segments on the per-segment metrics; the rest are "other"


class ServiceMetrics:
    """The service's metrics; one instance per app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Four groups, registered in this order (the order of the exposition).
        self._add_request_metrics(self.registry)
        self._add_classifier_metrics(self.registry)
        self._add_operations_metrics(self.registry)
        self._segment_labels: set[str] = set()
        self._published_segments: set[str] = set()
        self._add_segment_metrics(self.registry)

    def _add_request_metrics(self, r: CollectorRegistry) -> None:
        """HTTP requests and what was decided for them."""
        self.http_requests = Counter(
            "tierwise_http_requests_total",
            "HTTP requests by endpoint and status",
            ("endpoint", "status"),
            registry=r,
        )
        self.decisions = Counter("tierwise_decisions_total", "Routing decisions by tier", ("tier",), r)
        self.reasons = Counter("tierwise_decision_reasons_total", "Policy reasons by reason", ("reason",), r)
        self.decided_by = Counter(
            "tierwise_decisions_by_method_total",
            "Routing decisions by how they were decided: encoder, estimator (under load) or fallback (top tier)",
            ("decided_by",),
            r,
        )
        self.score_cache = Counter(
            "tierwise_score_cache_lookups_total",
            "Encoder score cache lookups by outcome: hit (a repeated request, not queued) or miss",
            ("outcome",),
            r,
        )
        self.escalations = Counter(
            "tierwise_escalations_total", "Decisions above the predicted tier", registry=r
        )

    def _add_classifier_metrics(self, r: CollectorRegistry) -> None:
        """Latency, the classifier's batches and time, and the loaded model."""
        self.latency = Histogram(
            "tierwise_request_latency_seconds",
            "Request latency by endpoint",
            LATENCY_BUCKETS,
            ("endpoint",),
            registry=r,
        )
        self.batch_size = Histogram(
            "tierwise_classifier_batch_size",
            "Texts per classifier call",
            BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "tierwise_classifier_seconds",
            "Time in the classifier per call",
            LATENCY_BUCKETS,
            registry=r,
        )
        self.model = Info("tierwise_model", "The loaded model", r)

    def _add_operations_metrics(self, r: CollectorRegistry) -> None:
        """Decisions per model version (canary), the decision log, feedback and shadow evaluation."""
        self.version_decisions = Counter(
            "tierwise_decisions_by_version_total",
            "Routing decisions by the model version that decided (canary included) and tier",
            ("model_version", "tier"),
            registry=r,
        )
        self.decision_log = Counter(
            "tierwise_decision_log_records_total",
            "Decision log records by outcome: written, dropped (queue full), failed, duplicate",
            ("outcome",),
            registry=r,
        )
        self.feedback = Counter("tierwise_feedback_total", "POST /feedback outcomes stored", ("kind",), r)
        self.feedback_outcomes = Counter(
            "tierwise_feedback_outcomes_total",
            "POST /feedback outcomes that pin the needed tier to one tier (a needed_tier, a pass on the "
            "cheapest tier, a failure of the tier below the top), by the tier the request was routed to "
            "and the tier it needed: a live confusion matrix",
            ("routed_tier", "needed_tier"),
            registry=r,
        )
        self.cascade_retries = Counter(
            "tierwise_cascade_retries_total",
            "Gateway cascade retries one tier up, reported through POST /feedback (source cascade), by the "
            "tier whose answer failed its check and why",
            ("from_tier", "reason"),
            registry=r,
        )
        self.shadow_under_routing = Gauge(
            "tierwise_shadow_under_routing_ratio",
            "Shadow evaluation: share of the last judged requests whose served tier's answer was worse than "
            "the top tier's, by tier and route",
            ("tier", "route"),
            registry=r,
        )
        self.shadow_under_routing_upper = Gauge(
            "tierwise_shadow_under_routing_upper_ratio",
            "Upper end of the 95% Wilson interval of tierwise_shadow_under_routing_ratio",
            ("tier", "route"),
            registry=r,
        )
        self.shadow_evaluations = Counter(
            "tierwise_shadow_evaluations_total",
            "Shadow evaluations by outcome: judged, dropped (queue full), over_budget, failed, unreadable_verdict",
            ("outcome",),
            registry=r,
        )

    def _add_segment_metrics(self, r: CollectorRegistry) -> None:
        """The per-segment risk controller's state (tierwise.evidence.segment_control), one series per
        segment (at most MAX_SEGMENT_LABELS; the controller's segments are routes and automatic ones)."""
        labels = ("segment",)
        self.segment_judged = Gauge(
            "tierwise_segment_judged", "Judged decisions in the controller's window, per segment", labels, r
        )
        self.segment_under_routing = Gauge(
            "tierwise_segment_under_routing_ratio",
            "Estimated under-routing of the segment at its current setting (judge noise corrected)",
            labels,
            r,
        )
        self.segment_bound = Gauge(
            "tierwise_segment_under_routing_bound_ratio",
            "One-sided upper bound (the controller's confidence) on the segment's under-routing; -1 in cold start",
            labels,
            r,
        )
        self.segment_alpha = Gauge(
            "tierwise_segment_alpha_ratio",
            "The segment's under-routing target (max_under_routing)",
            labels,
            r,
        )
        self.segment_q_shift = Gauge(
            "tierwise_segment_q_shift",
            "The shift the controller adds to the model's q for the segment (1 = every request to the top tier)",
            labels,
            r,
        )
        self.segment_decisions = Counter(
            "tierwise_segment_decisions_total",
            "Routing decisions per segment and tier",
            ("segment", "tier"),
            r,
        )

    def observe_segments(self, states: Mapping[str, SegmentState]) -> None:
        """Publish the controller's states (called after each refresh): the MAX_SEGMENT_LABELS segments
        with the most verdicts; a segment no longer among them (aged out) is cleared."""
        shown = sorted(states.values(), key=lambda s: (-s.judged, s.segment))[:MAX_SEGMENT_LABELS]
        for gone in self._published_segments - {s.segment for s in shown}:
            for gauge in (
                self.segment_judged,
                self.segment_alpha,
                self.segment_under_routing,
                self.segment_bound,
                self.segment_q_shift,
            ):
                gauge.clear(gone)
        self._published_segments = {s.segment for s in shown}
        for state in shown:
            segment = state.segment
            self.segment_judged.set(state.judged, segment)
            self.segment_alpha.set(state.alpha, segment)
            self.segment_under_routing.set(state.estimate or 0.0, segment)
            self.segment_bound.set(-1.0 if state.bound is None else state.bound, segment)
            self.segment_q_shift.set(1.0 if state.setting.top_only else state.setting.delta, segment)

    def observe_segment_decision(self, segment: str | None, tier: str) -> None:
        if segment is None:
            return
        if segment not in self._segment_labels and len(self._segment_labels) < MAX_SEGMENT_LABELS:
            self._segment_labels.add(segment)
        self.segment_decisions.inc(segment if segment in self._segment_labels else "other", tier)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)

    def observe_decision(
        self, tier: str, reasons: Sequence[str], escalated: bool, decided_by: str = DECIDED_BY_ENCODER
    ) -> None:
        self.decisions.inc(tier)
        self.decided_by.inc(decided_by)
        for reason in reasons:
            self.reasons.inc(reason)
        if escalated:
            self.escalations.inc()

    def observe_score_cache(self, outcome: str, count: int) -> None:
        if count:
            self.score_cache.inc(outcome, amount=float(count))

    def observe_decision_log(self, outcome: str, count: int) -> None:
        self.decision_log.inc(outcome, amount=float(count))

    def exposition(self) -> str:
        """The text exposition; with several workers, summed over all of them."""
        if MULTIPROC_DIR:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, MULTIPROC_DIR)
            return generate_latest(registry).decode()
        return generate_latest(self.registry).decode()
