"""What `tierwise label` will label, with which models, and what it will cost.

The requests come from the logs `tierwise audit` reads (tierwise/ops/request_logs.py), distinct and
sampled by a seeded hash so every run picks the same ones. The plan names the tiers evaluated (the
strongest is the reference every cheaper answer is compared with), the model of each, the judge and
the policy's list prices, and estimates each call's cost before anything is sent; with the journal
it says how many calls a resumed run still has to make.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierwise.core.policy import Policy, TierConfig
from tierwise.core.privacy import detect_private_data
from tierwise.core.scoring import CHARS_PER_TOKEN_ESTIMATE, request_cost_usd, tier_serving
from tierwise.evidence import judge
from tierwise.ops.label_journal import Journal, call_key
from tierwise.ops.request_logs import AuditError, Chunk, chunk_requests, plan_chunks

JUDGE_TEMPLATE_TOKENS = 250
JUDGE_OUTPUT_TOKENS = 150
LOG_CHUNK_ROWS = 1024  # requests read per slice of a log; any size gives the same requests


class LabelError(ValueError):
    """A user error: the message says what to change."""


# ---------------------------------------------------------------------------------------------
# Requests from logs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedRequest:
    where: str
    text: str
    messages: tuple[dict[str, Any], ...] | None  # the logged chat messages, when the log had them

    @property
    def chat(self) -> list[dict[str, Any]]:
        return list(self.messages) if self.messages else [{"role": "user", "content": self.text}]

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.chat, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def logged_messages(record: Any) -> tuple[dict[str, Any], ...] | None:
    if not isinstance(record, Mapping):
        return None
    if isinstance(record.get("body"), Mapping):
        return logged_messages(record["body"])
    messages = record.get("messages")
    if isinstance(messages, list) and messages and all(isinstance(m, Mapping) for m in messages):
        return tuple({"role": str(m.get("role", "user")), "content": m.get("content")} for m in messages)
    return None


def read_logs(paths: Sequence[Path]) -> tuple[list[LoggedRequest], list[str]]:
    """Every readable request of the logs, and the unreadable ones' 'where: why'."""
    try:
        chunks = plan_chunks(paths, LOG_CHUNK_ROWS)
    except AuditError as err:
        raise LabelError(str(err)) from err
    requests: list[LoggedRequest] = []
    errors: list[str] = []
    for chunk in chunks:
        lines = _chunk_records(chunk) if chunk.kind == "jsonl" else None
        for where, read, error in chunk_requests(chunk):
            if error is not None or read is None:
                errors.append(f"{where}: {error}")
                continue
            # Labeling sends the request to every evaluated tier's model and to the judge, all public:
            # a request the privacy rule flags is never sent (the service would route it privately).
            private_kinds = detect_private_data(read.privacy_text)
            if private_kinds:
                errors.append(f"{where}: holds {', '.join(private_kinds)}; not sent to any model")
                continue
            record = lines.get(where) if lines is not None else None
            requests.append(LoggedRequest(where, read.text, logged_messages(record)))
    return requests, errors


def _chunk_records(chunk: Chunk) -> dict[str, Any]:
    """JSON records of a JSONL chunk by their `path:line` location."""
    with open(chunk.path, "rb") as stream:
        stream.seek(chunk.start)
        data = stream.read(chunk.stop - chunk.start)
    out: dict[str, Any] = {}
    for index, raw in enumerate(data.splitlines()):
        try:
            out[f"{chunk.path}:{chunk.first_line + index}"] = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            continue
    return out


def sample_requests(requests: Sequence[LoggedRequest], size: int | None, seed: int) -> list[LoggedRequest]:
    """Distinct requests; `size` of them picked by a seeded hash (the same sample on every run)."""
    unique: dict[str, LoggedRequest] = {}
    for request in requests:
        unique.setdefault(request.digest, request)
    chosen = list(unique.values())
    if size is not None and size < len(chosen):
        chosen.sort(key=lambda r: hashlib.sha256(f"{seed}:{r.digest}".encode()).hexdigest())
        chosen = chosen[:size]
    return chosen


# ---------------------------------------------------------------------------------------------
# The plan: which models, how many calls, what they cost
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Price:
    input_per_million: float
    output_per_million: float

    def cost(self, prompt_tokens: float, completion_tokens: float) -> float:
        return float(
            request_cost_usd(
                prompt_tokens, completion_tokens, self.input_per_million, self.output_per_million
            )
        )


@dataclass(frozen=True)
class LabelPlan:
    tiers: tuple[str, ...]  # all ordered tiers of the policy
    evaluated: tuple[str, ...]  # the tiers whose models answer, cheapest first; the last is the reference
    models: dict[str, str]  # tier -> model
    judge_model: str
    mode: str
    prices: dict[str, Price]  # model -> price
    expected_output_tokens: int
    pass_grade: int = judge.DEFAULT_PASS_GRADE
    max_tokens: int | None = None

    @property
    def reference(self) -> str:
        return self.evaluated[-1]

    @property
    def candidates(self) -> tuple[str, ...]:
        return self.evaluated[:-1]

    def judge_calls_per_request(self) -> int:
        return 2 * len(self.candidates) if self.mode == "pairwise" else len(self.evaluated)

    def answer_estimate(self, tier: str, request: LoggedRequest) -> float:
        tokens = len(judge.conversation_block(request.chat)) / CHARS_PER_TOKEN_ESTIMATE
        return self.prices[self.models[tier]].cost(tokens, self.expected_output_tokens)

    def judge_estimate(self, request: LoggedRequest) -> float:
        answers = 2 if self.mode == "pairwise" else 1
        tokens = len(judge.conversation_block(request.chat)) / CHARS_PER_TOKEN_ESTIMATE
        prompt = tokens + answers * self.expected_output_tokens + JUDGE_TEMPLATE_TOKENS
        return self.prices[self.judge_model].cost(prompt, JUDGE_OUTPUT_TOKENS)

    def request_estimate(self, request: LoggedRequest) -> float:
        answers = sum(self.answer_estimate(t, request) for t in self.evaluated)
        return answers + self.judge_calls_per_request() * self.judge_estimate(request)


def price_of(policy: Policy, model: str, fallback: Price) -> Price:
    tier = tier_serving(policy, model)
    return fallback if tier is None else tier_price(tier)


def tier_price(tier: TierConfig) -> Price:
    return Price(tier.input_price_per_million, tier.output_price_per_million)


@dataclass(frozen=True)
class PlanChoices:
    """What the user chose for a labeling run (the `tierwise label` flags); None: the policy's default."""

    tiers: Sequence[str] | None = None  # tiers to evaluate (default all); the strongest is the reference
    tier_models: Sequence[str] = ()  # TIER=MODEL overrides of a tier's first model
    judge_model: str | None = None  # default: the top tier's first model
    judge_price: tuple[float, float] | None = None  # USD per million input, output tokens
    mode: str = "pairwise"
    pass_grade: int = judge.DEFAULT_PASS_GRADE
    max_tokens: int | None = None  # of the answer calls


def evaluated_tiers(policy: Policy, chosen: Sequence[str] | None) -> tuple[str, ...]:
    """The tiers whose models answer, in policy order; at least a cheaper one and the reference."""
    names = policy.tier_names
    wanted = list(chosen or names)
    unknown = [t for t in wanted if t not in names]
    if unknown:
        raise LabelError(f"--tiers names {unknown}, not tiers of the policy {list(names)}")
    evaluated = tuple(t for t in names if t in set(wanted))
    if len(evaluated) < 2:
        raise LabelError(
            "--tiers needs at least two tiers: a cheaper one and the reference (the strongest named)"
        )
    return evaluated


def tier_models(policy: Policy, overrides: Sequence[str]) -> dict[str, str]:
    """Tier -> the model that answers for it: its first, unless a TIER=MODEL override names another."""
    names = policy.tier_names
    models = {t.name: t.models[0] for t in policy.tiers}
    for override in overrides:
        tier, _, model = override.partition("=")
        if tier not in names or not model:
            raise LabelError(f"--tier-model {override!r} must be TIER=MODEL with a tier of {list(names)}")
        models[tier] = model
    return models


def build_plan(policy: Policy, choices: PlanChoices) -> LabelPlan:
    evaluated = evaluated_tiers(policy, choices.tiers)
    models = tier_models(policy, choices.tier_models)
    top = tier_price(policy.tiers[-1])
    judge_model = choices.judge_model or policy.tiers[-1].models[0]
    prices = {m: price_of(policy, m, top) for m in {models[t] for t in evaluated}}
    judge_price = Price(*choices.judge_price) if choices.judge_price else None
    prices[judge_model] = judge_price or price_of(policy, judge_model, top)
    return LabelPlan(
        tiers=policy.tier_names,
        evaluated=evaluated,
        models={t: models[t] for t in evaluated},
        judge_model=judge_model,
        mode=choices.mode,
        prices=prices,
        expected_output_tokens=policy.expected_output_tokens,
        pass_grade=choices.pass_grade,
        max_tokens=choices.max_tokens,
    )


# ---------------------------------------------------------------------------------------------
# What is left to pay for
# ---------------------------------------------------------------------------------------------


def pending_estimate(
    plan: LabelPlan, requests: Sequence[LoggedRequest], journal: Journal
) -> tuple[int, int, float]:
    """(calls to make, calls already in the journal, estimated USD of the calls to make)."""
    params_answer = {"temperature": 0.0, "max_tokens": plan.max_tokens}
    to_make = cached = 0
    cost = 0.0
    for request in requests:
        for tier in plan.evaluated:
            if call_key("answer", plan.models[tier], request.chat, params_answer) in journal:
                cached += 1
            else:
                to_make += 1
                cost += plan.answer_estimate(tier, request)
        judged = cached_judge_calls(plan, request, journal)
        to_make += plan.judge_calls_per_request() - judged
        cached += judged
        cost += (plan.judge_calls_per_request() - judged) * plan.judge_estimate(request)
    return to_make, cached, cost


def cached_judge_calls(plan: LabelPlan, request: LoggedRequest, journal: Journal) -> int:
    """First-try judge calls already in the journal (only knowable once the answers are)."""
    params = {"temperature": 0.0, "max_tokens": plan.max_tokens}
    answers: dict[str, str] = {}
    for tier in plan.evaluated:
        completion = journal.get(call_key("answer", plan.models[tier], request.chat, params))
        if completion is None:
            return 0
        answers[tier] = completion.text
    text = judge.conversation_block(request.chat)
    if plan.mode == "pairwise":
        reference = answers[plan.reference]
        prompts = [judge.pairwise_messages(text, reference, answers[t]) for t in plan.candidates]
        prompts += [judge.pairwise_messages(text, answers[t], reference) for t in plan.candidates]
    else:
        prompts = [judge.rubric_messages(text, answers[t]) for t in plan.evaluated]
    judge_params = {"temperature": 0.0, "max_tokens": judge.JUDGE_MAX_TOKENS}
    return sum(call_key("judge", plan.judge_model, p, judge_params) in journal for p in prompts)


def plan_message(plan: LabelPlan, sampled: int, to_make: int, cached: int, cost: float) -> str:
    judge_calls = plan.judge_calls_per_request() * sampled
    models = ", ".join(f"{t}={plan.models[t]}" for t in plan.evaluated)
    return (
        f"label: {sampled} requests x {len(plan.evaluated)} tiers ({models}), "
        f"judge {plan.judge_model} ({plan.mode}): {len(plan.evaluated) * sampled} answer + {judge_calls} judge calls; "
        f"{to_make} to make, {cached} already in the journal (free); estimated cost {cost:.4f} USD "
        f"(policy list prices, {plan.expected_output_tokens} output tokens per answer)"
    )
