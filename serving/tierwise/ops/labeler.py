"""The calls behind one labeled row: answers from every evaluated tier, then the judge's verdicts.

`Labeler.label` asks each evaluated tier's model for its answer, has the judge compare every cheaper
answer with the reference tier's (pairwise, in both orders, or graded against a rubric) and turns
the verdicts into `allowed_tiers` (`tierwise.evidence.judge.allowed_tiers`). Every call goes through the
journal first (a call made before costs nothing), then through the budget and a semaphore that
bounds the calls in flight.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tierwise.core.scoring import CHARS_PER_TOKEN_ESTIMATE
from tierwise.evidence import judge
from tierwise.evidence.llm_api import ChatClient, Completion
from tierwise.ops.label_journal import Journal, call_key
from tierwise.ops.label_plan import LabelPlan, LoggedRequest

DEFAULT_SOURCE = "judged"


class BudgetReached(Exception):
    """The --max-cost budget is spent."""


@dataclass
class Budget:
    max_usd: float | None
    spent: float = 0.0
    reserved: float = 0.0

    def reserve(self, estimate: float) -> bool:
        if self.max_usd is not None and self.spent + self.reserved + estimate > self.max_usd:
            return False
        self.reserved += estimate
        return True

    def release(self, estimate: float) -> None:
        self.reserved = max(0.0, self.reserved - estimate)

    def pay(self, cost: float) -> None:
        self.spent += cost
        if self.max_usd is not None and self.spent > self.max_usd:
            raise BudgetReached


@dataclass
class LabelStats:
    requests: int = 0
    labeled: int = 0
    calls_made: int = 0
    calls_cached: int = 0
    cost_usd: float = 0.0
    cached_cost_usd: float = 0.0
    dropped: Counter[str] = field(default_factory=Counter)
    non_monotone: int = 0
    position_bias: int = 0
    not_started: int = 0
    retries: int = 0
    seconds: float = 0.0
    tier_mix: Counter[str] = field(default_factory=Counter)
    first_error: str = ""

    def to_json(self) -> dict[str, Any]:
        values = dict(vars(self))
        values["dropped"] = dict(self.dropped)
        values["tier_mix"] = dict(self.tier_mix)
        return values


class Labeler:
    """Labels one request at a time; calls go through the journal, the budget and the semaphore."""

    def __init__(
        self, plan: LabelPlan, client: ChatClient, journal: Journal, budget: Budget, concurrency: int
    ) -> None:
        self.plan = plan
        self.client = client
        self.journal = journal
        self.budget = budget
        self.stats = LabelStats()
        self._slots = asyncio.Semaphore(concurrency)

    def params(self, role: str) -> dict[str, Any]:
        max_tokens = judge.JUDGE_MAX_TOKENS if role == "judge" else self.plan.max_tokens
        return {"temperature": 0.0, "max_tokens": max_tokens}

    def call_cost(self, model: str, completion: Completion, messages: list[dict[str, Any]]) -> float:
        prompt: float
        output: float
        if completion.prompt_tokens is None:
            prompt = len(judge.conversation_block(messages)) / CHARS_PER_TOKEN_ESTIMATE
        else:
            prompt = completion.prompt_tokens
        if completion.completion_tokens is None:
            output = len(completion.text) / CHARS_PER_TOKEN_ESTIMATE
        else:
            output = completion.completion_tokens
        return self.plan.prices[model].cost(prompt, output)

    async def call(self, role: str, model: str, messages: list[dict[str, Any]]) -> tuple[Completion, float]:
        """(completion, cost) from the journal, or from the API (then journaled)."""
        params = self.params(role)
        key = call_key(role, model, messages, params)
        cached = self.journal.get(key)
        if cached is not None:
            self.stats.calls_cached += 1
            cost = float(self.journal.entries[key].get("cost_usd", 0.0))
            self.stats.cached_cost_usd += cost
            return cached, cost
        if self.budget.max_usd is not None and self.budget.spent >= self.budget.max_usd:
            raise BudgetReached
        async with self._slots:
            completion = await self.client.complete(
                model, messages, params["max_tokens"], params["temperature"]
            )
        cost = self.call_cost(model, completion, messages)
        self.journal.add(key, role, model, completion, cost)
        self.stats.calls_made += 1
        self.stats.cost_usd += cost
        self.budget.pay(cost)
        return completion, cost

    async def judge_call(self, messages: list[dict[str, str]], parse: Any) -> tuple[Any, list[str], float]:
        """A judge verdict, asking once more when the first reply is unreadable."""
        texts: list[str] = []
        total = 0.0
        for attempt in (messages, judge.with_reminder(messages)):
            completion, cost = await self.call("judge", self.plan.judge_model, attempt)
            texts.append(completion.text)
            total += cost
            verdict = parse(completion.text)
            if verdict is not None:
                return verdict, texts, total
        return None, texts, total

    async def answers(self, request: LoggedRequest) -> dict[str, tuple[Completion, float]]:
        tiers = self.plan.evaluated
        results = await asyncio.gather(
            *(self.call("answer", self.plan.models[t], request.chat) for t in tiers)
        )
        return dict(zip(tiers, results, strict=True))

    async def pairwise(
        self, request_text: str, reference: str, candidate: str
    ) -> tuple[judge.PairwiseResult, dict[str, Any]]:
        (first, first_texts, c1), (second, second_texts, c2) = await asyncio.gather(
            self.judge_call(
                judge.pairwise_messages(request_text, reference, candidate), judge.parse_pairwise
            ),
            self.judge_call(
                judge.pairwise_messages(request_text, candidate, reference), judge.parse_pairwise
            ),
        )
        result = judge.PairwiseResult(first, second)
        evidence = {
            "verdicts": {"reference_first": first, "candidate_first": second},
            "outcomes": list(result.outcomes or []),
            "position_bias": result.position_bias,
            "judge_calls": len(first_texts) + len(second_texts),
            "judge_cost_usd": c1 + c2,
        }
        return result, evidence

    async def verdicts(
        self, request: LoggedRequest, answers: dict[str, tuple[Completion, float]]
    ) -> tuple[dict[str, bool | None], dict[str, dict[str, Any]]]:
        request_text = judge.conversation_block(request.chat)
        plan = self.plan
        if plan.mode == "pairwise":
            reference = answers[plan.reference][0].text
            results = await asyncio.gather(
                *(self.pairwise(request_text, reference, answers[t][0].text) for t in plan.candidates)
            )
            accepted: dict[str, bool | None] = {
                t: r.accepted for t, (r, _) in zip(plan.candidates, results, strict=True)
            }
            accepted[plan.reference] = True
            evidence = {t: e for t, (_, e) in zip(plan.candidates, results, strict=True)}
            self.stats.position_bias += sum(r.position_bias for r, _ in results)
            return accepted, evidence
        graded = await asyncio.gather(
            *(
                self.judge_call(judge.rubric_messages(request_text, answers[t][0].text), judge.parse_grade)
                for t in plan.evaluated
            )
        )
        accepted = {
            t: judge.rubric_accepted(g, plan.pass_grade)
            for t, (g, _, _) in zip(plan.evaluated, graded, strict=True)
        }
        evidence = {
            t: {"grade": g, "judge_calls": len(texts), "judge_cost_usd": cost}
            for t, (g, texts, cost) in zip(plan.evaluated, graded, strict=True)
        }
        return accepted, evidence

    async def label(self, request: LoggedRequest) -> dict[str, Any] | None:
        """The training row for one request, or None (the reason is counted in stats.dropped)."""
        answers = await self.answers(request)
        accepted, evidence = await self.verdicts(request, answers)
        if any(v is None for v in accepted.values()):
            self.stats.dropped["unreadable_verdict"] += 1
            return None
        if not accepted[self.plan.reference]:
            self.stats.dropped["reference_failed"] += 1
            return None
        allowed, non_monotone = judge.allowed_tiers(self.plan.tiers, self.plan.evaluated, accepted)  # type: ignore[arg-type]
        self.stats.non_monotone += non_monotone
        return self.row(request, allowed, non_monotone, accepted, answers, evidence)

    def row(
        self,
        request: LoggedRequest,
        allowed: list[str],
        non_monotone: bool,
        accepted: dict[str, bool | None],
        answers: dict[str, tuple[Completion, float]],
        verdicts: dict[str, dict[str, Any]],
    ) -> dict[str, Any]:
        per_tier = {}
        for tier in self.plan.evaluated:
            completion, cost = answers[tier]
            per_tier[tier] = {
                "model": self.plan.models[tier],
                "accepted": accepted[tier],
                "usage": {
                    "prompt_tokens": completion.prompt_tokens,
                    "completion_tokens": completion.completion_tokens,
                },
                "answer_cost_usd": cost,
                **verdicts.get(tier, {}),
            }
        total = sum(c for _, c in answers.values()) + sum(
            v.get("judge_cost_usd", 0.0) for v in verdicts.values()
        )
        content: dict[str, Any] = {"messages": request.chat} if request.messages else {"text": request.text}
        return {
            **content,
            "allowed_tiers": allowed,
            "source": DEFAULT_SOURCE,
            "weight": 1.0,
            "evidence": {
                "mode": self.plan.mode,
                "reference_tier": self.plan.reference,
                "judge_model": self.plan.judge_model,
                "tiers": per_tier,
                "non_monotone": non_monotone,
                "cost_usd": total,
                "log": request.where,
            },
        }
