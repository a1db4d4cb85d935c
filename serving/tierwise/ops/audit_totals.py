"""The integer totals of a traffic audit (`tierwise audit`): counted per chunk, merged in any order.

Every figure of the report is derived from these counters, so an engine that audits the chunks in
another order or on other machines (Ray Data) gets exactly the same report.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

MAX_ERRORS_KEPT = 20
TOKEN_BIN_EDGES = tuple(2**k for k in range(4, 21))  # 16 .. 1M tokens; the last bin is open


@dataclass
class AuditTotals:
    """Integer totals of an audit; `merge` is order-independent, so any engine gets the same result."""

    requests: int = 0
    unreadable: int = 0
    routed: Counter[str] = field(default_factory=Counter)  # requests per served tier
    predicted: Counter[str] = field(default_factory=Counter)  # requests per classifier argmax tier
    input_tokens: Counter[str] = field(default_factory=Counter)  # input tokens per served tier
    escalated: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    token_bins: Counter[int] = field(default_factory=Counter)  # index into TOKEN_BIN_EDGES (+ open bin)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (location, message), the first few

    def merge(self, other: AuditTotals) -> None:
        self.requests += other.requests
        self.unreadable += other.unreadable
        self.escalated += other.escalated
        for name in ("routed", "predicted", "input_tokens", "reasons", "token_bins"):
            getattr(self, name).update(getattr(other, name))
        self.errors = sorted(self.errors + other.errors, key=_location_key)[:MAX_ERRORS_KEPT]

    def to_json(self) -> str:
        values = {
            "requests": self.requests,
            "unreadable": self.unreadable,
            "routed": dict(self.routed),
            "predicted": dict(self.predicted),
            "input_tokens": dict(self.input_tokens),
            "escalated": self.escalated,
            "reasons": dict(self.reasons),
            "token_bins": {str(k): v for k, v in self.token_bins.items()},
            "errors": [list(e) for e in self.errors],
        }
        return json.dumps(values)

    @classmethod
    def from_json(cls, text: str) -> AuditTotals:
        values = json.loads(text)
        return cls(
            requests=values["requests"],
            unreadable=values["unreadable"],
            routed=Counter(values["routed"]),
            predicted=Counter(values["predicted"]),
            input_tokens=Counter(values["input_tokens"]),
            escalated=values["escalated"],
            reasons=Counter(values["reasons"]),
            token_bins=Counter({int(k): v for k, v in values["token_bins"].items()}),
            errors=[(str(where), str(error)) for where, error in values["errors"]],
        )


def _location_key(error: tuple[str, str]) -> tuple[str, int]:
    location = error[0]
    head, _, tail = location.rpartition(":")
    return (head, int(tail)) if tail.strip().isdigit() else (location, 0)


def token_bin(tokens: int) -> int:
    for index, edge in enumerate(TOKEN_BIN_EDGES):
        if tokens < edge:
            return index
    return len(TOKEN_BIN_EDGES)
