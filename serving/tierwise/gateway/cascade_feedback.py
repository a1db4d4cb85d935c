"""A cascade's failed checks as tierwise feedback (`POST /feedback`, source `cascade`), sent in the
background and in order, so the decision's latest feedback is its last failed tier.

`feedback_rows` turns an outcome into rows; `FeedbackSender` delivers them from asyncio (a task per
request) or from blocking code (one thread), counts sent and failed rows, and can be drained.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from tierwise.core.cascade_names import CASCADE_SOURCE
from tierwise.gateway.cascade_outcome import CascadeOutcome
from tierwise.gateway.cascade_stats import CascadeStats
from tierwise.gateway.wire import Routing

logger = logging.getLogger("tierwise.cascade")


def feedback_rows(routing: Routing, outcome: CascadeOutcome) -> list[dict[str, Any]]:
    """The `feedback()` keyword arguments of each failed check (none without a tierwise decision).
    A private request's evidence is its tier, reason and end only: no detail, model, cost or latency."""
    if routing.failed_upward or not routing.request_id:
        return []
    failed = [(i, a) for i, a in enumerate(outcome.attempts) if a.reason is not None]
    rows = []
    for position, (index, attempt) in enumerate(failed):
        last = position == len(failed) - 1  # the request's summary rides on its last row
        evidence: dict[str, Any] = {"tier": attempt.tier, "reason": attempt.reason}
        if not outcome.private:
            evidence |= {
                "model": attempt.group,
                "detail": attempt.detail[:300],
                "attempt": index,
                "next_tier": attempt.next_tier,
                "cost_usd": round(attempt.cost_usd, 8),
            }
        if last:
            evidence |= {"stop": outcome.stop, "final_passed": outcome.passed}
        if last and not outcome.private:
            evidence |= {
                "request_cost_usd": round(outcome.spent_usd, 8),
                "added_ms": round(outcome.added_ms, 3),
            }
        rows.append(
            {
                "request_id": routing.request_id,
                "passed": False,
                "source": CASCADE_SOURCE,
                "tier": attempt.tier,
                "reason": attempt.reason,
                "evidence": evidence,
            }
        )
    return rows


class FeedbackSender:
    """Delivers feedback rows to `client` (AsyncTierwiseClient or TierwiseClient; None sends nothing)."""

    def __init__(self, client: Any, stats: CascadeStats) -> None:
        self.client = client
        self.stats = stats
        self._pending: set[asyncio.Task[None]] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._futures: list[Future[None]] = []

    def send_async(self, rows: list[dict[str, Any]]) -> None:
        """Deliver `rows` in a task of the running loop; returns at once."""
        if not rows or self.client is None:
            return
        task = asyncio.ensure_future(self._deliver_async(rows))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _deliver_async(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:  # in order: the decision's latest feedback is its last failed tier
            try:
                await self.client.feedback(**row)
                self.stats.observe_feedback("sent")
            except Exception as err:
                self.stats.observe_feedback("failed")
                logger.warning("tierwise cascade: feedback not recorded (%s)", err)

    def send_sync(self, rows: list[dict[str, Any]]) -> None:
        """Deliver `rows` in the sender's thread; returns at once."""
        if not rows or self.client is None:
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tierwise-cascade")
        self._futures = [f for f in self._futures if not f.done()]
        self._futures.append(self._executor.submit(self._deliver_sync, rows))

    def _deliver_sync(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            try:
                self.client.feedback(**row)
                self.stats.observe_feedback("sent")
            except Exception as err:
                self.stats.observe_feedback("failed")
                logger.warning("tierwise cascade: feedback not recorded (%s)", err)

    async def drain(self) -> None:
        """Wait for the rows sent from asyncio (tests, benchmarks, shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def drain_sync(self, timeout: float = 30.0) -> None:
        """Wait for the rows sent from blocking code."""
        for future in list(self._futures):
            future.result(timeout=timeout)
        self._futures.clear()
