"""Running the cascade around calls a gateway makes: check the answer, retry one tier up, record.

`Cascade.arun` (asyncio) and `Cascade.run` (blocking) drive one request's cascade, the same steps
for both (`_steps`, a generator that asks its driver to call a model or the judge): check the answer
(cascade.py), optionally have the judge grade it, ask the planner for the next tier, call it through
the gateway's own `call`, and so on. When a retry itself fails (every group of its chain errs), the
last answer is kept. Each failed check is then sent as feedback to tierwise in the background
(cascade_feedback.py: `POST /feedback`, source `cascade`, the tier whose answer failed and the reason; the last row also
carries the request's estimated cost and the latency the cascade added), so `tierwise report`, the
live confusion matrix and `tierwise export-feedback` see it; and counted (`CascadeStats`, mirrored to
Prometheus in the gateway's process).

Nothing of the answer is sent or logged: a check's `detail` names a JSON path and a schema keyword,
never a value (cascade.py). A private request's rows and metadata carry no detail at all, and its
feedback evidence is the tier, the reason and how the request ended (no model, cost or latency).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tierwise.gateway.cascade import (
    JUDGE_LOW,
    STOP_PASSED,
    CheckFailure,
    RetryPlanner,
    Rung,
    as_dict,
    check_answer,
    response_usage,
)
from tierwise.gateway.cascade_config import CascadeConfig
from tierwise.gateway.cascade_feedback import FeedbackSender, feedback_rows
from tierwise.gateway.cascade_outcome import Answer, Attempt, CascadeOutcome
from tierwise.gateway.cascade_stats import CascadeStats
from tierwise.gateway.wire import Routing

logger = logging.getLogger("tierwise.cascade")

STOP_RETRY_ERROR = "retry_error"  # the retry's call failed: the last answer is kept


@dataclass(frozen=True)
class _Call:
    rung: Rung


@dataclass(frozen=True)
class _Judge:
    messages: list[dict[str, str]]


@dataclass(frozen=True)
class _Privacy:
    """Ask the driver whether the request is private (its check is called at most once)."""


# Whether a request carries personal data: known, or a callable (the async driver awaits what it
# returns, so a check can scan a large request off the event loop) asked once, only when a retry or
# the judge is near. A check that raises counts as private (fail closed).
PrivateCheck = bool | Callable[[], bool] | Callable[[], Awaitable[bool]]


@dataclass
class _Request:
    """One request's cascade inputs."""

    body: Mapping[str, Any]
    routing: Routing
    chain: Sequence[str]
    private_check: PrivateCheck
    route: str | None = None
    private: bool | None = None  # None: not asked yet


AsyncCall = Callable[[Rung], Awaitable[Answer]]
SyncCall = Callable[[Rung], Answer]
AsyncJudge = Callable[[list[dict[str, str]]], Awaitable[str | None]]
SyncJudge = Callable[[list[dict[str, str]]], str | None]


def cascade_stats(planner: RetryPlanner, prometheus: bool = False) -> CascadeStats:
    """The statistics of a cascade of `planner`'s policy and settings: segments of its routes, each
    measured over the judge's `window`."""
    return CascadeStats(planner.config.judge_window, prometheus, planner.policy.routes)


def _sampled(key: str, share: float) -> bool:
    if share <= 0:
        return False
    digest = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16)
    return digest / 0xFFFFFFFF < share


def _judged(judge: SyncJudge | None, messages: list[dict[str, str]]) -> str | None:
    return judge(messages) if judge is not None else None


def _asked(check: PrivateCheck) -> bool:
    """A blocking driver's answer of a privacy check; one that fails (or cannot be awaited here)
    counts as private: fail closed."""
    try:
        answer = check() if callable(check) else check
    except Exception as err:
        logger.warning("tierwise cascade: the privacy check failed (%s); the request counts as private", err)
        return True
    if inspect.isawaitable(answer):
        if inspect.iscoroutine(answer):
            answer.close()
        logger.warning("tierwise cascade: an async privacy check in a blocking call counts as private")
        return True
    return bool(answer)


async def _asked_async(check: PrivateCheck) -> bool:
    """`_asked` for the async driver: an awaitable answer is awaited."""
    try:
        answer = check() if callable(check) else check
        if inspect.isawaitable(answer):
            answer = await answer
    except Exception as err:
        logger.warning("tierwise cascade: the privacy check failed (%s); the request counts as private", err)
        return True
    return bool(answer)


def _answer_text(response: Any) -> str:
    choices = as_dict(response).get("choices") or []
    message = as_dict(as_dict(choices[0]).get("message") or {}) if choices else {}
    return str(message.get("content") or message.get("tool_calls") or "")


class Cascade:
    """One gateway's cascade: its settings, planner, statistics and feedback sender."""

    def __init__(
        self,
        planner: RetryPlanner,
        feedback_client: Any = None,
        stats: CascadeStats | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.planner = planner
        self.config: CascadeConfig = planner.config
        self.stats = stats or cascade_stats(planner)
        self.feedback = FeedbackSender(feedback_client, self.stats)
        self.clock = clock

    # -- the steps, shared by both drivers -----------------------------------------------------------

    @staticmethod
    def _private(request: _Request) -> Generator[_Privacy, Any, bool]:
        """Whether the request is private: asked of the driver once, and only when it matters."""
        if request.private is None:
            check = request.private_check
            request.private = bool((yield _Privacy())) if callable(check) else bool(check)
        return request.private

    def _wants_judge(self, request: _Request, tier: str | None, has_judge: bool) -> bool:
        """Whether this answer is due for the judge (a private request never is: the caller asks)."""
        judge = self.config.judge
        if judge is None or not has_judge:
            return False
        key = request.routing.request_id or repr(request.body.get("messages"))
        if _sampled(key, judge.share):
            return True
        rate = self.stats.segment_failure_rate(request.route, tier, judge.min_answers)
        return judge.failure_rate is not None and rate is not None and rate >= judge.failure_rate

    def _judge_messages(self, request: _Request, response: Any) -> list[dict[str, str]]:
        from tierwise.evidence.judge import conversation_block, rubric_messages

        messages = [m for m in request.body.get("messages") or [] if isinstance(m, Mapping)]
        return rubric_messages(conversation_block(messages), _answer_text(response))

    def _steps(
        self, request: _Request, first: Answer, has_judge: bool
    ) -> Generator[_Call | _Judge | _Privacy, Any, CascadeOutcome]:
        started = self.clock()
        answer, attempts, spent, judged, stop = first, [], 0.0, False, STOP_PASSED
        max_tokens = request.body.get("max_tokens") or request.body.get("max_completion_tokens")
        while True:
            tier = self.planner.tier_of(answer.group) or request.routing.tier
            usage = response_usage(request.body, answer.response)
            cost = self.planner.cost_usd(tier, usage)
            spent += cost
            failure = check_answer(request.body, answer.response, self.config.checks)
            if (
                failure is None
                and self._wants_judge(request, tier, has_judge)
                and not (yield from self._private(request))
            ):
                judged = True
                failure = self._graded((yield _Judge(self._judge_messages(request, answer.response))))
            self.stats.observe_check(request.route, tier, failure is None)
            if failure is None:
                attempts.append(Attempt(tier, answer.group, None, cost_usd=cost))
                break
            private = yield from self._private(request)
            plan = self.planner.next_rung(
                request.chain, tier, len(attempts), spent, usage, private,
                max_tokens if isinstance(max_tokens, int) else None,
            )  # fmt: skip
            next_tier = plan.rung.tier if plan.rung is not None else None
            attempts.append(Attempt(tier, answer.group, failure.reason, failure.detail, cost, next_tier))
            if plan.rung is None:
                stop = plan.stop or STOP_PASSED
                break
            try:
                answer = yield _Call(plan.rung)
            except Exception as err:  # every group of the retry's chain failed: keep the last answer
                logger.warning("tierwise cascade: the retry to %s failed (%s)", plan.rung.group, err)
                attempts[-1] = Attempt(tier, attempts[-1].group, failure.reason, failure.detail, cost, None)
                stop = STOP_RETRY_ERROR
                break
        added_ms = (self.clock() - started) * 1000  # (a failed check asked whether it is private)
        outcome = CascadeOutcome(answer, attempts, stop, added_ms, spent, judged, bool(request.private))
        self.stats.observe_outcome(outcome)
        return outcome

    def _graded(self, reply: str | None) -> CheckFailure | None:
        from tierwise.evidence.judge import parse_grade

        grade = parse_grade(reply)
        judge = self.config.judge
        if grade is None or judge is None or grade >= judge.min_grade:
            return None  # an unreadable verdict fails nothing: the local checks already passed
        return CheckFailure(JUDGE_LOW, f"judge grade {grade} < {judge.min_grade}")

    # -- drivers -------------------------------------------------------------------------------------

    async def arun(
        self,
        body: Mapping[str, Any],
        routing: Routing,
        chain: Sequence[str],
        first: Answer,
        call: AsyncCall,
        private: PrivateCheck,
        judge: AsyncJudge | None = None,
        route: str | None = None,
    ) -> CascadeOutcome:
        """The cascade of one request whose first answer is `first`; `call` calls a rung's group.
        `private` (or a callable saying so, sync or async, asked only before a retry or the judge):
        the request carries personal data, so it is neither retried nor judged."""
        request = _Request(body, routing, chain, private, route)
        steps = self._steps(request, first, judge is not None)
        reply: Any = None
        error: Exception | None = None
        while True:
            try:
                effect = steps.throw(error) if error is not None else steps.send(reply)
            except StopIteration as stop:
                outcome: CascadeOutcome = stop.value
                break
            reply, error = None, None
            try:
                if isinstance(effect, _Call):
                    reply = await call(effect.rung)
                elif isinstance(effect, _Privacy):
                    reply = await _asked_async(request.private_check)
                elif judge is not None:
                    reply = await judge(effect.messages)
            except Exception as err:
                if isinstance(effect, _Judge):
                    logger.warning("tierwise cascade: the judge failed (%s); the answer stands", err)
                else:
                    error = err
        self._send_feedback_async(request, outcome)
        return outcome

    def run(
        self,
        body: Mapping[str, Any],
        routing: Routing,
        chain: Sequence[str],
        first: Answer,
        call: SyncCall,
        private: bool | Callable[[], bool],
        judge: SyncJudge | None = None,
        route: str | None = None,
    ) -> CascadeOutcome:
        """`arun` for blocking code."""
        request = _Request(body, routing, chain, private, route)
        steps = self._steps(request, first, judge is not None)
        reply: Any = None
        error: Exception | None = None
        while True:
            try:
                effect = steps.throw(error) if error is not None else steps.send(reply)
            except StopIteration as stop:
                outcome: CascadeOutcome = stop.value
                break
            reply, error = None, None
            try:
                if isinstance(effect, _Call):
                    reply = call(effect.rung)
                elif isinstance(effect, _Privacy):
                    reply = _asked(request.private_check)
                else:
                    reply = _judged(judge, effect.messages)
            except Exception as err:
                if isinstance(effect, _Judge):
                    logger.warning("tierwise cascade: the judge failed (%s); the answer stands", err)
                else:
                    error = err
        self._send_feedback_sync(request, outcome)
        return outcome

    # -- feedback ------------------------------------------------------------------------------------

    def _send_feedback_async(self, request: _Request, outcome: CascadeOutcome) -> None:
        if self.config.feedback:
            self.feedback.send_async(feedback_rows(request.routing, outcome))

    def _send_feedback_sync(self, request: _Request, outcome: CascadeOutcome) -> None:
        if self.config.feedback:
            self.feedback.send_sync(feedback_rows(request.routing, outcome))

    async def drain(self) -> None:
        """Wait for the feedback sent in the background (tests, benchmarks, shutdown)."""
        await self.feedback.drain()

    def drain_sync(self, timeout: float = 30.0) -> None:
        self.feedback.drain_sync(timeout)
