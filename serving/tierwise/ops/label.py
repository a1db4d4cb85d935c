"""`tierwise label`: judge-labeled training rows from your own request logs.

A sample of the logged requests (the formats `tierwise audit` reads) goes to the model of every
tier (or the tiers named with --tiers) through an OpenAI-compatible API: a LiteLLM gateway or any
--base-url, the key in the environment variable --api-key-env. A judge model then says whether each
cheaper answer is as good as the strongest tier's (pairwise, both orders; or --mode rubric), and
`tierwise.evidence.judge.allowed_tiers` turns the verdicts into `allowed_tiers`. The rows are what
`make data USER_DATA=labeled.jsonl` reads, with the evidence (verdicts, models, tokens, cost).

Before any call the command prints the number of calls and their estimated cost (the policy's list
prices; tierwise/ops/label_plan.py), and it needs --yes or a --max-cost budget (it stops starting
requests before the budget would be passed). Every completed call goes to an append-only journal
(tierwise/ops/label_journal.py), so a killed or budget-stopped run, started again with the same
arguments, continues where it stopped and pays for nothing twice. Prompts and answers go only to
--base-url and the local files. This module runs the requests concurrently (the calls of one request:
tierwise/ops/labeler.py); the command's flags are in tierwise/cli/label.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tierwise.evidence.llm_api import ChatClient, LLMCallError, LLMConfigError, RetryPolicy
from tierwise.ops.label_journal import Journal
from tierwise.ops.label_plan import LabelError, LabelPlan, LoggedRequest
from tierwise.ops.labeler import DEFAULT_SOURCE, Budget, BudgetReached, Labeler, LabelStats
from tierwise.ops.progress import progress_bar


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
    bar = progress_bar(len(requests), options.progress, "label")
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


def write_rows(rows: Sequence[dict[str, Any]], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with open(partial, "w", encoding="utf-8") as sink:
        for row in rows:
            sink.write(json.dumps(row, ensure_ascii=False) + "\n")
    partial.replace(out)


def resolve_base_url(value: str | None) -> str:
    """--base-url, else TIERWISE_LLM_BASE_URL, else OPENAI_BASE_URL (read when the run starts)."""
    url = value or os.environ.get("TIERWISE_LLM_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
    if not url:
        raise LabelError(
            "no API to call: pass --base-url (your LiteLLM gateway, e.g. http://localhost:4000/v1) "
            "or set TIERWISE_LLM_BASE_URL"
        )
    return url


def summary_message(stats: LabelStats, out: Path, journal: Path) -> str:
    """The one line a finished run prints: what was labeled, what it cost, what was dropped and why."""
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
