"""Prometheus metrics in the text exposition format (0.0.4), without a client library.

Counters and histograms are kept per process (each uvicorn worker has its own, as with
prometheus-client without multiprocess mode). Updates take a lock, so the classifier thread
may record too.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LabelValues = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Counter:
    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()) -> None:
        self.name, self.help_text, self.label_names = name, help_text, tuple(label_names)
        self._values: dict[LabelValues, float] = {}
        self._lock = threading.Lock()

    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[label_values] = self._values.get(label_values, 0.0) + amount

    def value(self, *label_values: str) -> float:
        return self._values.get(label_values, 0.0)

    def expose(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} counter"]
        with self._lock:
            items = sorted(self._values.items())
        lines += [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in items]
        return lines


class Histogram:
    def __init__(
        self, name: str, help_text: str, buckets: Sequence[float], label_names: Sequence[str] = ()
    ) -> None:
        self.name, self.help_text, self.label_names = name, help_text, tuple(label_names)
        self.buckets = tuple(sorted(buckets))
        self._counts: dict[LabelValues, list[int]] = {}
        self._sums: dict[LabelValues, float] = {}
        self._lock = threading.Lock()

    def observe(self, value: float, *label_values: str) -> None:
        index = bisect.bisect_left(self.buckets, value)
        with self._lock:
            counts = self._counts.setdefault(label_values, [0] * (len(self.buckets) + 1))
            counts[index] += 1
            self._sums[label_values] = self._sums.get(label_values, 0.0) + value

    def count(self, *label_values: str) -> int:
        return sum(self._counts.get(label_values, []))

    def expose(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} histogram"]
        with self._lock:
            items = sorted((k, list(v), self._sums[k]) for k, v in self._counts.items())
        for key, counts, total in items:
            cumulative = 0
            for bound, count in zip((*self.buckets, math.inf), counts, strict=True):
                cumulative += count
                le = f'le="{_number(bound)}"'
                lines.append(f"{self.name}_bucket{_labels(self.label_names, key, le)} {cumulative}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, key)} {_number(total)}")
            lines.append(f"{self.name}_count{_labels(self.label_names, key)} {cumulative}")
        return lines


class Gauge:
    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()) -> None:
        self.name, self.help_text, self.label_names = name, help_text, tuple(label_names)
        self._values: dict[LabelValues, float] = {}
        self._lock = threading.Lock()

    def set(self, value: float, *label_values: str) -> None:
        with self._lock:
            self._values[label_values] = float(value)

    def value(self, *label_values: str) -> float | None:
        return self._values.get(label_values)

    def expose(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        if not items:
            return []
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} gauge"]
        return lines + [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in items]


class Info:
    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help_text = name, help_text
        self._labels: dict[str, str] = {}

    def set(self, **labels: str) -> None:
        self._labels = dict(labels)

    def expose(self) -> list[str]:
        if not self._labels:
            return []
        names, values = zip(*sorted(self._labels.items()), strict=True)
        return [
            f"# HELP {self.name}_info {self.help_text}",
            f"# TYPE {self.name}_info gauge",
            f"{self.name}_info{_labels(names, values)} 1",
        ]


LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    """The service's metrics; one instance per app."""

    def __init__(self) -> None:
        self.http_requests = Counter(
            "tierwise_http_requests_total", "HTTP requests by endpoint and status", ("endpoint", "status")
        )
        self.decisions = Counter("tierwise_decisions_total", "Routing decisions by tier", ("tier",))
        self.reasons = Counter("tierwise_decision_reasons_total", "Policy reasons by reason", ("reason",))
        self.escalations = Counter("tierwise_escalations_total", "Decisions above the predicted tier")
        self.latency = Histogram(
            "tierwise_request_latency_seconds", "Request latency by endpoint", LATENCY_BUCKETS, ("endpoint",)
        )
        self.batch_size = Histogram(
            "tierwise_classifier_batch_size", "Texts per classifier call", BATCH_SIZE_BUCKETS
        )
        self.inference = Histogram(
            "tierwise_classifier_seconds", "Time in the classifier per call", LATENCY_BUCKETS
        )
        self.model = Info("tierwise_model", "The loaded model")
        self.version_decisions = Counter(
            "tierwise_decisions_by_version_total",
            "Routing decisions by the model version that decided (canary included) and tier",
            ("model_version", "tier"),
        )
        self.decision_log = Counter(
            "tierwise_decision_log_records_total",
            "Decision log records by outcome: written, dropped (queue full), failed, duplicate",
            ("outcome",),
        )
        self.feedback = Counter("tierwise_feedback_total", "POST /feedback outcomes stored", ("kind",))
        self.shadow_under_routing = Gauge(
            "tierwise_shadow_under_routing_ratio",
            "Shadow evaluation: share of the last judged requests whose served tier's answer was worse than "
            "the top tier's, by tier and route",
            ("tier", "route"),
        )
        self.shadow_under_routing_upper = Gauge(
            "tierwise_shadow_under_routing_upper_ratio",
            "Upper end of the 95% Wilson interval of tierwise_shadow_under_routing_ratio",
            ("tier", "route"),
        )
        self.shadow_evaluations = Counter(
            "tierwise_shadow_evaluations_total",
            "Shadow evaluations by outcome: judged, dropped (queue full), over_budget, failed, unreadable_verdict",
            ("outcome",),
        )

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)

    def observe_decision(self, tier: str, reasons: Sequence[str], escalated: bool) -> None:
        self.decisions.inc(tier)
        for reason in reasons:
            self.reasons.inc(reason)
        if escalated:
            self.escalations.inc()

    def observe_decision_log(self, outcome: str, count: int) -> None:
        self.decision_log.inc(outcome, amount=float(count))

    def exposition(self) -> str:
        lines: list[str] = []
        for metric in (
            self.http_requests,
            self.decisions,
            self.reasons,
            self.escalations,
            self.latency,
            self.batch_size,
            self.inference,
            self.model,
            self.version_decisions,
            self.decision_log,
            self.feedback,
            self.shadow_under_routing,
            self.shadow_under_routing_upper,
            self.shadow_evaluations,
        ):
            lines += metric.expose()
        return "\n".join(lines) + "\n"
