"""What one request's cascade produced: each answer, each attempt and its check, and how it ended,
with the header and metadata a gateway attaches to the response (tierwise.gateway.cascade_runner
makes them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

HEADER = "x-tierwise-cascade"
ADDED_MS_HEADER = "x-tierwise-cascade-added-ms"  # the latency the cascade added (checks, judge, retries)


@dataclass(frozen=True)
class Answer:
    """A model's answer: the complete response (what is checked), the group that gave it, and what
    the caller delivers (the response itself, or a buffered stream's chunks)."""

    response: Any
    group: str | None
    deliver: Any = None


@dataclass(frozen=True)
class Attempt:
    tier: str | None
    group: str | None
    reason: str | None  # None: the answer passed
    detail: str = ""
    cost_usd: float = 0.0
    next_tier: str | None = None


@dataclass
class CascadeOutcome:
    answer: Answer
    attempts: list[Attempt]
    stop: str
    added_ms: float
    spent_usd: float
    judged: bool = False
    private: bool = False  # the request carries personal data: no detail leaves the cascade

    @property
    def passed(self) -> bool:
        return self.attempts[-1].reason is None

    @property
    def retries(self) -> int:
        return len(self.attempts) - 1

    def header(self) -> str:
        """`x-tierwise-cascade`: each tier tried and its check, then why it stopped, e.g.
        `fast:invalid_json balanced:ok; stop=passed`."""
        tried = " ".join(f"{a.tier or a.group}:{a.reason or 'ok'}" for a in self.attempts)
        return f"{tried}; stop={self.stop}"

    def headers(self) -> dict[str, str]:
        return {HEADER: self.header(), ADDED_MS_HEADER: f"{self.added_ms:.1f}"}

    def metadata(self) -> dict[str, Any]:
        return {
            "tried": [
                {
                    "tier": a.tier,
                    "model": a.group,
                    "check": a.reason or "ok",
                    "detail": "" if self.private else a.detail,
                }
                for a in self.attempts
            ],
            "stop": self.stop,
            "passed": self.passed,
            "retries": self.retries,
            "added_ms": round(self.added_ms, 3),
            "estimated_usd": round(self.spent_usd, 8),
            "judged": self.judged,
        }
