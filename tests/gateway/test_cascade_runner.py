"""The cascade's driver: retries one tier up through the caller's `call`, the judge, feedback rows and
statistics, with scripted answers, a counting clock and recording feedback clients (no network)."""

from __future__ import annotations

import asyncio

import pytest
from tierwise.core.policy_file import DEFAULT_POLICY_FILE, load_policy
from tierwise.gateway.cascade import RetryPlanner, Rung
from tierwise.gateway.cascade_config import CascadeConfig, JudgeConfig
from tierwise.gateway.cascade_outcome import Answer
from tierwise.gateway.cascade_runner import Cascade
from tierwise.gateway.wire import Routing

POLICY = load_policy(DEFAULT_POLICY_FILE)
CHAIN = ["gpt-4o-mini", "claude-3-5-haiku", "gpt-4.1", "claude-sonnet-4", "o3"]
ROUTING = Routing(tier="fast", model="gpt-4o-mini", fallbacks=tuple(CHAIN[1:]), request_id="req-1")
PRIVATE_ROUTING = Routing(
    tier="private",
    model="llama-3.3-70b-selfhosted",
    fallbacks=(),
    request_id="req-2",
    reasons=("private_data",),
)
JSON_BODY = {
    "messages": [{"role": "user", "content": "city as JSON"}],
    "response_format": {"type": "json_object"},
}
USAGE = {"prompt_tokens": 1000, "completion_tokens": 100}


def answer(content, group, finish="stop"):
    response = {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}
        ],
        "usage": USAGE,
    }
    return Answer(response, group)


class Clock:
    """Moves 10 ms per reading: added latency is a count of readings, never wall time."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 0.010
        return self.now


class Feedback:
    def __init__(self):
        self.rows = []

    async def feedback(self, **row):
        self.rows.append(row)
        return {"feedback_id": len(self.rows)}


class SyncFeedback(Feedback):
    def feedback(self, **row):
        self.rows.append(row)
        return {"feedback_id": len(self.rows)}


def cascade(feedback=None, **settings):
    return Cascade(RetryPlanner(POLICY, CascadeConfig(**settings)), feedback, clock=Clock())


def scripted(*answers):
    """An async `call` answering with `answers` in order; it records the rungs it was asked for."""
    queue, rungs = list(answers), []

    async def call(rung: Rung) -> Answer:
        rungs.append(rung)
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return call, rungs


def run(coro):
    return asyncio.run(coro)


def test_a_passing_answer_is_not_retried_or_reported():
    feedback = Feedback()
    c = cascade(feedback)
    call, rungs = scripted()
    outcome = run(c.arun(JSON_BODY, ROUTING, CHAIN, answer('{"city": "Oslo"}', "gpt-4o-mini"), call, False))
    assert outcome.passed and outcome.stop == "passed" and rungs == [] and feedback.rows == []
    assert outcome.header() == "fast:ok; stop=passed"
    assert outcome.added_ms == pytest.approx(10.0)  # one clock step: the checks only


def test_a_failed_check_retries_one_tier_up_and_is_reported():
    feedback = Feedback()
    c = cascade(feedback)
    call, rungs = scripted(answer('{"city": "Oslo"}', "gpt-4.1"))

    async def go():
        outcome = await c.arun(JSON_BODY, ROUTING, CHAIN, answer('{"city": ', "gpt-4o-mini"), call, False)
        await c.drain()
        return outcome

    outcome = run(go())
    assert [r.group for r in rungs] == ["gpt-4.1"] and rungs[0].fallbacks == ("claude-sonnet-4", "o3")
    assert outcome.passed and outcome.retries == 1 and outcome.answer.group == "gpt-4.1"
    assert outcome.header() == "fast:invalid_json balanced:ok; stop=passed"
    assert outcome.metadata()["tried"][0]["check"] == "invalid_json"
    # the spend: fast's answer and balanced's, at the policy's prices
    assert outcome.spent_usd == pytest.approx((1000 * 0.15 + 100 * 0.6 + 1000 * 2.0 + 100 * 8.0) / 1e6)
    [row] = feedback.rows
    assert row["request_id"] == "req-1" and row["passed"] is False and row["source"] == "cascade"
    assert row["tier"] == "fast" and row["reason"] == "invalid_json"
    evidence = row["evidence"]
    assert evidence["next_tier"] == "balanced" and evidence["final_passed"] is True
    assert evidence["request_cost_usd"] == pytest.approx(outcome.spent_usd)
    assert evidence["added_ms"] == pytest.approx(outcome.added_ms)
    assert c.stats.snapshot()["retries"] == {"fast:invalid_json": 1}


def test_retries_stop_at_max_retries_and_every_failure_is_reported_in_order():
    feedback = Feedback()
    c = cascade(feedback, max_retries=1)
    call, rungs = scripted(answer("cut", "gpt-4.1", finish="length"))

    async def go():
        outcome = await c.arun(JSON_BODY, ROUTING, CHAIN, answer("", "gpt-4o-mini"), call, False)
        await c.drain()
        return outcome

    outcome = run(go())
    assert not outcome.passed and outcome.stop == "max_retries" and len(rungs) == 1
    assert [(r["tier"], r["reason"]) for r in feedback.rows] == [("fast", "empty"), ("balanced", "truncated")]
    assert (
        "stop" not in feedback.rows[0]["evidence"] and feedback.rows[1]["evidence"]["stop"] == "max_retries"
    )
    assert c.stats.snapshot()["responses"] == {"failed": 1}


def test_the_cost_cap_stops_a_retry():
    c = cascade(max_usd_per_request=0.001)
    call, rungs = scripted()
    outcome = run(c.arun(JSON_BODY, ROUTING, CHAIN, answer("{", "gpt-4o-mini"), call, False))
    assert rungs == [] and outcome.stop == "cost_cap" and not outcome.passed


def test_a_private_request_is_never_retried_and_never_judged():
    feedback = Feedback()
    judge_calls = []

    async def judge(messages):
        judge_calls.append(messages)
        return "GRADE: 1"

    c = cascade(feedback, max_retries=3, judge=JudgeConfig("o3", 4, 1.0, None, 1, 10))
    call, rungs = scripted()

    async def go():
        first = answer("I'm sorry, but I can't help with that.", "llama-3.3-70b-selfhosted")
        outcome = await c.arun(
            JSON_BODY, PRIVATE_ROUTING, ["llama-3.3-70b-selfhosted"], first, call, True, judge
        )
        ok = await c.arun(
            JSON_BODY, PRIVATE_ROUTING, ["llama-3.3-70b-selfhosted"],
            answer('{"a": 1}', "llama-3.3-70b-selfhosted"), call, True, judge,
        )  # fmt: skip
        await c.drain()
        return outcome, ok

    outcome, ok = run(go())
    assert rungs == [] and judge_calls == [] and outcome.stop == "private" and ok.passed
    assert [(r["tier"], r["reason"]) for r in feedback.rows] == [("private", "refusal")]  # still evidence


def test_a_failing_retry_keeps_the_last_answer():
    c = cascade()
    call, _ = scripted(RuntimeError("every balanced deployment is down"))
    first = answer("{", "gpt-4o-mini")
    outcome = run(c.arun(JSON_BODY, ROUTING, CHAIN, first, call, False))
    assert (
        outcome.answer is first and outcome.stop == "retry_error" and outcome.attempts[-1].next_tier is None
    )


def test_the_judge_grades_a_sampled_share():
    graded = []

    async def judge(messages):
        graded.append(messages)
        return "Weak answer.\nGRADE: 2"

    c = cascade(judge=JudgeConfig("o3", 4, 1.0, None, 1, 10))
    call, rungs = scripted(answer('{"city": "Oslo"}', "gpt-4.1"))
    outcome = run(
        c.arun(JSON_BODY, ROUTING, CHAIN, answer('{"city": "Olso"}', "gpt-4o-mini"), call, False, judge)
    )
    assert outcome.attempts[0].reason == "judge_low" and len(rungs) == 1 and outcome.judged
    assert len(graded) == 2 and "[Answer]" in graded[0][1]["content"]  # the project's rubric prompt
    assert not outcome.passed  # balanced got a 2 as well; one retry allowed


def test_the_judge_grades_every_answer_of_a_failing_segment():
    graded = []

    async def judge(messages):
        graded.append(messages)
        return "GRADE: 5"

    # failure_rate 0.5 from 2 answers, measured over the segment's last 2 (judge.window)
    c = cascade(max_retries=0, judge=JudgeConfig("o3", 4, 0.0, 0.5, 2, 2))
    call, _ = scripted()
    judged = []

    async def once(content):
        outcome = await c.arun(JSON_BODY, ROUTING, CHAIN, answer(content, "gpt-4o-mini"), call, False, judge)
        judged.append(outcome.judged)

    async def go():
        await once('{"a": 1}')  # passes, not judged (no rate yet)
        await once("{")  # fails locally: [pass, fail]
        await once('{"a": 1}')  # the rate of [pass, fail] is 0.5: judged (and passes)
        await once('{"a": 1}')  # the window is [fail, pass]: still 0.5, judged
        await once('{"a": 1}')  # [pass, pass]: the failure left the window, not judged (1/4 with no window)

    run(go())
    assert judged == [False, False, True, True, False] and len(graded) == 2
    assert c.stats.window == 2


def test_no_feedback_without_a_tierwise_decision():
    feedback = Feedback()
    c = cascade(feedback)
    upward = Routing(tier="frontier", model="o3", fallbacks=(), request_id="r", failed_upward=True)
    call, _ = scripted()

    async def go():
        await c.arun(JSON_BODY, upward, ["o3"], answer("{", "o3"), call, False)
        await c.drain()

    run(go())
    assert feedback.rows == []


def test_the_blocking_driver_does_the_same():
    feedback = SyncFeedback()
    c = cascade(feedback)
    rungs = []

    def call(rung):
        rungs.append(rung)
        return answer('{"ok": true}', rung.group)

    outcome = c.run(JSON_BODY, ROUTING, CHAIN, answer("```json", "gpt-4o-mini"), call, False)
    c.drain_sync()
    assert outcome.header() == "fast:invalid_json balanced:ok; stop=passed"
    assert [r["reason"] for r in feedback.rows] == ["invalid_json"]
    snapshot = c.stats.snapshot()
    assert snapshot["success_rate_per_tier"] == {"balanced": 1.0, "fast": 0.0}
    assert snapshot["cost_per_success_usd"] == pytest.approx(outcome.spent_usd)


SSN = "123-45-6789"
EMAIL = "jane.doe@example.com"
SSN_BODY = {
    "messages": [{"role": "user", "content": "the record as JSON"}],
    "response_format": {
        "type": "json_schema",
        "json_schema": {
            "name": "person",
            "schema": {
                "type": "object",
                "properties": {"ssn": {"type": "string", "pattern": "^[0-9]{9}$"}},
                "additionalProperties": {"type": "integer"},
            },
        },
    },
}
LEAKY_ANSWER = f'{{"ssn": "{SSN}", "{EMAIL}": "{EMAIL}"}}'


def _feedback_and_metadata(routing, chain, private):
    feedback = Feedback()
    c = cascade(feedback)
    call, _ = scripted(answer(LEAKY_ANSWER, "gpt-4.1"))

    async def go():
        outcome = await c.arun(SSN_BODY, routing, chain, answer(LEAKY_ANSWER, chain[0]), call, private)
        await c.drain()
        return outcome

    outcome = run(go())
    return feedback.rows, outcome


def test_the_answers_values_reach_no_feedback_and_no_metadata():
    rows, outcome = _feedback_and_metadata(ROUTING, CHAIN, False)
    assert [r["evidence"]["detail"] for r in rows] == ["ssn: pattern", "ssn: pattern"]
    for text in (repr(rows), repr(outcome.metadata()), outcome.header()):
        assert SSN not in text and EMAIL not in text


def test_a_private_request_sends_no_detail_and_only_its_tier_and_reason():
    rows, outcome = _feedback_and_metadata(PRIVATE_ROUTING, ["llama-3.3-70b-selfhosted"], True)
    [row] = rows
    assert row["evidence"] == {
        "tier": "private",
        "reason": "schema_mismatch",
        "stop": "private",
        "final_passed": False,
    }
    assert [t["detail"] for t in outcome.metadata()["tried"]] == [""]
    for text in (repr(rows), repr(outcome.metadata()), outcome.header()):
        assert SSN not in text and EMAIL not in text and "ssn" not in text


def test_the_cost_cap_holds_when_the_retrys_own_tier_errs():
    """LiteLLM calls a rung's fallbacks when its groups err: with every balanced group down, a retry
    under a 0.01 cap must not be answered by frontier (which spent 0.0227 before)."""
    down = {"gpt-4.1", "claude-sonnet-4"}
    tried = []

    async def litellm_like(rung: Rung) -> Answer:
        for group in (rung.group, *rung.fallbacks):
            tried.append(group)
            if group not in down:
                return answer('{"city": "Oslo"}', group)
        raise RuntimeError("every deployment of the chain failed")

    c = cascade(max_usd_per_request=0.01)
    outcome = run(c.arun(JSON_BODY, ROUTING, CHAIN, answer("{", "gpt-4o-mini"), litellm_like, False))
    assert tried == ["gpt-4.1", "claude-sonnet-4"] and outcome.stop == "retry_error"
    assert outcome.spent_usd <= 0.01


def test_segments_are_the_policys_routes_so_caller_named_routes_cannot_grow_them():
    c = cascade(max_retries=0)
    call, _ = scripted()

    async def go():
        for i in range(200):  # a caller naming a new route on every request
            await c.arun(JSON_BODY, ROUTING, CHAIN, answer("{", "gpt-4o-mini"), call, False, route=f"r{i}")
        await c.arun(
            JSON_BODY, ROUTING, CHAIN, answer("{}", "gpt-4o-mini"), call, False, route="legal-review"
        )

    run(go())
    assert sorted(c.stats._segments) == [("-", "fast"), ("legal-review", "fast")]  # policy.yaml's route
    assert c.stats.segment_failure_rate("r7", "fast", 1) == 1.0  # every other route: one segment
    assert c.stats.segment_failure_rate("legal-review", "fast", 1) == 0.0


def test_an_async_privacy_check_is_awaited_once_and_a_failing_one_counts_as_private():
    asked = []

    async def private_async():
        asked.append("async")
        return True

    def broken():
        asked.append("broken")
        raise RuntimeError("detector crashed")

    for check in (private_async, broken):
        c = cascade(max_retries=3)
        call, rungs = scripted()
        outcome = run(c.arun(JSON_BODY, ROUTING, CHAIN, answer("{", "gpt-4o-mini"), call, check))
        assert rungs == [] and outcome.stop == "private" and outcome.private
    c = cascade()
    call, rungs = scripted()
    sync_outcome = c.run(JSON_BODY, ROUTING, CHAIN, answer("{", "gpt-4o-mini"), call, broken)
    assert rungs == [] and sync_outcome.stop == "private"
    assert asked == ["async", "broken", "broken"]
