"""`tierwise label LOGS --out labeled.jsonl`: judge-labeled training rows from your own request logs.

A sample of the logged requests (the formats `tierwise audit` reads) goes to the model of every
tier (or the tiers named with --tiers) through an OpenAI-compatible API: a LiteLLM gateway or any
--base-url, the key in the environment variable --api-key-env. A judge model then says whether each
cheaper answer is as good as the strongest tier's (pairwise, both orders; or --mode rubric), and
`tierwise.ops.judge.allowed_tiers` turns the verdicts into `allowed_tiers`. The rows are what
`make data USER_DATA=labeled.jsonl` reads, with the evidence (verdicts, models, tokens, cost).

Before any call it prints the number of calls and their estimated cost (the policy's list prices),
and it needs --yes or a --max-cost budget (it stops starting requests before the budget would be
passed). Every completed call goes to an append-only journal (default `<out>.journal.jsonl`), so a
killed or budget-stopped run, started again with the same arguments, continues where it stopped
and pays for nothing twice. Prompts and answers go only to --base-url and the local files.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tierwise.core.policy import Policy, PolicyError, TierConfig, load_policy
from tierwise.ops import judge
from tierwise.ops.label_journal import Journal, call_key
from tierwise.ops.llm_api import (
    ChatClient,
    Completion,
    LLMCallError,
    LLMConfigError,
    RetryPolicy,
    api_key_from_env,
)

CHARS_PER_TOKEN = 4
JUDGE_TEMPLATE_TOKENS = 250
JUDGE_OUTPUT_TOKENS = 150
DEFAULT_SOURCE = "judged"


class LabelError(ValueError):
    """A user error: the message says what to change."""


class BudgetReached(Exception):
    """The --max-cost budget is spent."""


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
    from tierwise.ops.audit import AuditError, chunk_requests, plan_chunks

    try:
        chunks = plan_chunks(paths, 1024)
    except AuditError as err:
        raise LabelError(str(err)) from err
    requests: list[LoggedRequest] = []
    errors: list[str] = []
    for chunk in chunks:
        lines = _chunk_records(chunk) if chunk.kind == "jsonl" else None
        for where, text, error in chunk_requests(chunk):
            if error is not None or text is None:
                errors.append(f"{where}: {error}")
                continue
            record = lines.get(where) if lines is not None else None
            requests.append(LoggedRequest(where, text, logged_messages(record)))
    return requests, errors


def _chunk_records(chunk: Any) -> dict[str, Any]:
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
        return (prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million) / 1e6


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

    def calls_per_request(self) -> int:
        return len(self.evaluated) + self.judge_calls_per_request()

    def answer_estimate(self, tier: str, request: LoggedRequest) -> float:
        tokens = len(judge.conversation_block(request.chat)) / CHARS_PER_TOKEN
        return self.prices[self.models[tier]].cost(tokens, self.expected_output_tokens)

    def judge_estimate(self, request: LoggedRequest) -> float:
        answers = 2 if self.mode == "pairwise" else 1
        tokens = len(judge.conversation_block(request.chat)) / CHARS_PER_TOKEN
        prompt = tokens + answers * self.expected_output_tokens + JUDGE_TEMPLATE_TOKENS
        return self.prices[self.judge_model].cost(prompt, JUDGE_OUTPUT_TOKENS)

    def request_estimate(self, request: LoggedRequest) -> float:
        answers = sum(self.answer_estimate(t, request) for t in self.evaluated)
        return answers + self.judge_calls_per_request() * self.judge_estimate(request)


def price_of(policy: Policy, model: str, fallback: Price) -> Price:
    tiers = [*policy.tiers, *([policy.private_tier] if policy.private_tier else [])]
    for tier in tiers:
        if model in tier.models:
            return Price(tier.input_price_per_million, tier.output_price_per_million)
    return fallback


def tier_price(tier: TierConfig) -> Price:
    return Price(tier.input_price_per_million, tier.output_price_per_million)


def build_plan(policy: Policy, args: argparse.Namespace) -> LabelPlan:
    names = policy.tier_names
    chosen = args.tiers or list(names)
    unknown = [t for t in chosen if t not in names]
    if unknown:
        raise LabelError(f"--tiers names {unknown}, not tiers of the policy {list(names)}")
    evaluated = tuple(t for t in names if t in set(chosen))
    if len(evaluated) < 2:
        raise LabelError(
            "--tiers needs at least two tiers: a cheaper one and the reference (the strongest named)"
        )
    models = {t.name: t.models[0] for t in policy.tiers}
    for override in args.model or []:
        tier, _, model = override.partition("=")
        if tier not in names or not model:
            raise LabelError(f"--model {override!r} must be TIER=MODEL with a tier of {list(names)}")
        models[tier] = model
    top = tier_price(policy.tiers[-1])
    judge_price = Price(*args.judge_price) if args.judge_price else None
    judge_model = args.judge_model or policy.tiers[-1].models[0]
    prices = {m: price_of(policy, m, top) for m in {models[t] for t in evaluated}}
    prices[judge_model] = judge_price or price_of(policy, judge_model, top)
    return LabelPlan(
        tiers=names,
        evaluated=evaluated,
        models={t: models[t] for t in evaluated},
        judge_model=judge_model,
        mode=args.mode,
        prices=prices,
        expected_output_tokens=policy.expected_output_tokens,
        pass_grade=args.pass_grade,
        max_tokens=args.max_tokens,
    )


# ---------------------------------------------------------------------------------------------
# Running the calls
# ---------------------------------------------------------------------------------------------


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
        prompt = completion.prompt_tokens
        if prompt is None:
            prompt = len(judge.conversation_block(messages)) / CHARS_PER_TOKEN
        output = completion.completion_tokens
        if output is None:
            output = len(completion.text) / CHARS_PER_TOKEN
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


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


@dataclass
class RunOptions:
    base_url: str
    api_key: str | None
    concurrency: int = 8
    max_cost: float | None = None
    timeout_seconds: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    source: str = DEFAULT_SOURCE
    progress: bool = True


async def label_all(
    plan: LabelPlan, requests: Sequence[LoggedRequest], journal: Journal, options: RunOptions
) -> tuple[list[dict[str, Any]], LabelStats]:
    """Label the requests with `options.concurrency` calls in flight; rows in request order."""
    client = ChatClient(
        options.base_url, options.api_key, options.timeout_seconds, options.retry, options.concurrency * 2
    )
    budget = Budget(options.max_cost)
    labeler = Labeler(plan, client, journal, budget, options.concurrency)
    rows: list[dict[str, Any] | None] = [None] * len(requests)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(requests)):
        queue.put_nowait(index)
    bar = progress_bar(len(requests), options.progress)
    stop = asyncio.Event()

    async def worker() -> None:
        while not stop.is_set():
            try:
                index = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await label_one(labeler, requests[index], rows, index, budget, stop)
            bar.update(1)

    started = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as group:  # a config error cancels the other workers
            for _ in range(max(1, options.concurrency)):
                group.create_task(worker())
    except* LLMConfigError as errors:
        raise errors.exceptions[0] from None
    finally:
        bar.close()
        await client.aclose()
    stats = labeler.stats
    stats.seconds = time.perf_counter() - started
    stats.requests = len(requests)
    stats.retries = client.stats.retries
    stats.not_started = queue.qsize() + stats.dropped.get("budget", 0)
    stats.dropped.pop("budget", None)
    done = [dict(r, source=options.source) for r in rows if r is not None]
    stats.labeled = len(done)
    stats.tier_mix.update("+".join(r["allowed_tiers"]) for r in done)
    return done, stats


async def label_one(
    labeler: Labeler,
    request: LoggedRequest,
    rows: list[dict[str, Any] | None],
    index: int,
    budget: Budget,
    stop: asyncio.Event,
) -> None:
    estimate = labeler.plan.request_estimate(request)
    if not budget.reserve(estimate):
        labeler.stats.dropped["budget"] += 1
        stop.set()
        return
    try:
        rows[index] = await labeler.label(request)
    except BudgetReached:
        labeler.stats.dropped["budget"] += 1
        stop.set()
    except LLMConfigError:
        stop.set()
        raise
    except LLMCallError as err:
        labeler.stats.dropped["call_failed"] += 1
        labeler.stats.first_error = labeler.stats.first_error or f"{request.where}: {err}"
    finally:
        budget.release(estimate)


def progress_bar(total: int, show: bool) -> Any:
    from tierwise.ops.audit import _progress_bar

    bar = _progress_bar(total, show)
    if hasattr(bar, "set_description"):
        bar.set_description("label")
    return bar


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


def write_rows(rows: Sequence[dict[str, Any]], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with open(partial, "w", encoding="utf-8") as sink:
        for row in rows:
            sink.write(json.dumps(row, ensure_ascii=False) + "\n")
    partial.replace(out)


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def resolve_base_url(value: str | None) -> str:
    import os

    url = value or os.environ.get("TIERWISE_LLM_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
    if not url:
        raise LabelError(
            "no API to call: pass --base-url (your LiteLLM gateway, e.g. http://localhost:4000/v1) "
            "or set TIERWISE_LLM_BASE_URL"
        )
    return url


def plan_message(plan: LabelPlan, sampled: int, to_make: int, cached: int, cost: float) -> str:
    judge_calls = plan.judge_calls_per_request() * sampled
    models = ", ".join(f"{t}={plan.models[t]}" for t in plan.evaluated)
    return (
        f"label: {sampled} requests x {len(plan.evaluated)} tiers ({models}), "
        f"judge {plan.judge_model} ({plan.mode}): {len(plan.evaluated) * sampled} answer + {judge_calls} judge calls; "
        f"{to_make} to make, {cached} already in the journal (free); estimated cost {cost:.4f} USD "
        f"(policy list prices, {plan.expected_output_tokens} output tokens per answer)"
    )


def summary_message(stats: LabelStats, out: Path, journal: Path) -> str:
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(stats.dropped.items())) or "none"
    rate = stats.calls_made / stats.seconds if stats.seconds > 0 else 0.0
    line = (
        f"labeled {stats.labeled} of {stats.requests} requests into {out} in {stats.seconds:.1f} s: "
        f"{stats.calls_made} calls made ({rate:.0f}/s, {stats.retries} retried), {stats.calls_cached} from the "
        f"journal {journal}; cost {stats.cost_usd:.4f} USD; dropped: {dropped}; non-monotone verdicts "
        f"{stats.non_monotone}; position-bias disagreements {stats.position_bias}"
    )
    if stats.first_error:
        line += f"; first failed call: {stats.first_error}"
    if stats.not_started:
        line += f"; {stats.not_started} request(s) left for the budget: run again with a larger --max-cost to continue"
    return line


def run(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)
    plan = build_plan(policy, args)
    if args.concurrency < 1:
        raise LabelError("--concurrency must be at least 1")
    logged, errors = read_logs(args.logs)
    for error in errors[:10]:
        sys.stderr.write(f"skipped {error}\n")
    requests = sample_requests(logged, args.sample, args.seed)
    if not requests:
        raise LabelError(f"no readable requests in {', '.join(map(str, args.logs))}")
    journal_path = args.journal or args.out.with_name(args.out.name + ".journal.jsonl")
    journal = Journal(journal_path)
    try:
        to_make, cached, cost = pending_estimate(plan, requests, journal)
        sys.stderr.write(plan_message(plan, len(requests), to_make, cached, cost) + "\n")
        if args.dry_run:
            return 0
        if to_make and not args.yes and args.max_cost is None:
            raise LabelError(f"add --yes to spend about {cost:.4f} USD, or --max-cost USD to cap the spend")
        options = RunOptions(
            base_url=resolve_base_url(args.base_url),
            api_key=api_key_from_env(args.api_key_env),
            concurrency=args.concurrency,
            max_cost=args.max_cost,
            timeout_seconds=args.timeout,
            retry=RetryPolicy(attempts=args.retries + 1, base_seconds=args.backoff),
            source=args.source,
            progress=not args.no_progress,
        )
        rows, stats = asyncio.run(label_all(plan, requests, journal, options))
    finally:
        journal.close()
    write_rows(rows, args.out)
    sys.stderr.write(summary_message(stats, args.out, journal_path) + "\n")
    if args.stats:
        args.stats.write_text(json.dumps(stats.to_json(), indent=1) + "\n", encoding="utf-8")
    if rows:
        sys.stderr.write(f"next: make data USER_DATA={args.out}\n")
    return 0 if rows or stats.not_started else 1


def cmd_label(args: argparse.Namespace) -> int:
    try:
        return run(args)
    except (LabelError, PolicyError, LLMConfigError) as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(
            "interrupted: every finished call is in the journal; run the same command to continue\n"
        )
        return 130


def _judge_price(value: str) -> tuple[float, float]:
    try:
        given, _, output = value.partition(",")
        return float(given), float(output)
    except ValueError as err:
        raise argparse.ArgumentTypeError("--judge-price is INPUT,OUTPUT in USD per million tokens") from err


def add_label_command(sub: Any) -> None:
    from tierwise.service.settings import DEFAULT_POLICY_FILE

    label = sub.add_parser("label", help="judge-labeled training rows from request logs (calls your models)")
    label.add_argument("logs", type=Path, nargs="+", help="request logs: .jsonl, .txt or .parquet")
    label.add_argument("--out", type=Path, required=True, help="labeled JSONL for make data USER_DATA=")
    label.add_argument("--policy", type=Path, default=DEFAULT_POLICY_FILE, help="tiers, models and prices")
    label.add_argument(
        "--base-url", default=None, help="OpenAI-compatible API (default TIERWISE_LLM_BASE_URL)"
    )
    label.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key")
    label.add_argument(
        "--tiers",
        nargs="+",
        default=None,
        help="tiers to evaluate (default all); the strongest is the reference",
    )
    label.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="TIER=MODEL",
        help="model of a tier (default its first)",
    )
    label.add_argument("--judge-model", default=None, help="judge model (default the top tier's first model)")
    label.add_argument(
        "--judge-price",
        type=_judge_price,
        default=None,
        metavar="IN,OUT",
        help="judge USD per million tokens",
    )
    label.add_argument("--mode", choices=judge.JUDGE_MODES, default="pairwise")
    label.add_argument(
        "--pass-grade",
        type=int,
        default=judge.DEFAULT_PASS_GRADE,
        help="rubric mode: lowest passing grade (1-5)",
    )
    label.add_argument(
        "--sample", type=int, default=None, help="label this many distinct requests (default all)"
    )
    label.add_argument("--seed", type=int, default=0)
    label.add_argument("--max-tokens", type=int, default=None, help="max_tokens of the answer calls")
    label.add_argument("--concurrency", type=int, default=8, help="calls in flight")
    label.add_argument("--max-cost", type=float, default=None, help="stop before spending more USD than this")
    label.add_argument("--yes", action="store_true", help="spend the estimated cost without a cap")
    label.add_argument("--dry-run", action="store_true", help="print the plan and cost, call nothing")
    label.add_argument(
        "--journal", type=Path, default=None, help="call journal (default <out>.journal.jsonl)"
    )
    label.add_argument("--timeout", type=float, default=60.0, help="seconds per call")
    label.add_argument("--retries", type=int, default=5, help="retries on 429, 5xx and timeouts")
    label.add_argument("--backoff", type=float, default=0.5, help="first retry delay in seconds (doubles)")
    label.add_argument("--source", default=DEFAULT_SOURCE, help="source name of the rows")
    label.add_argument("--stats", type=Path, default=None, help="also write the run's figures as JSON")
    label.add_argument("--no-progress", action="store_true")
    label.set_defaults(func=cmd_label)
