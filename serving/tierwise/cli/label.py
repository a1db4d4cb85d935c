"""`tierwise label --input LOG [LOG ...] --output labeled.jsonl`: the command around tierwise/ops/label.py.

    tierwise label --input requests.jsonl --output labeled.jsonl --base-url http://localhost:4000/v1 \\
        [--policy YAML] [--tiers fast frontier] [--tier-model fast=MODEL] [--max-cost USD | --yes]

It prints the plan and its estimated cost first; it spends nothing without --yes or a --max-cost
budget, and a run started again with the same flags takes every finished call from the journal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from tierwise.cli.options import add_input_files, add_output_file, add_policy
from tierwise.core.policy_file import load_policy
from tierwise.evidence import judge
from tierwise.evidence.llm_api import RetryPolicy, api_key_from_env
from tierwise.ops.label import RunOptions, label_all, resolve_base_url, summary_message, write_rows
from tierwise.ops.label_journal import Journal
from tierwise.ops.label_plan import (
    LabelError,
    PlanChoices,
    build_plan,
    pending_estimate,
    plan_message,
    read_logs,
    sample_requests,
)
from tierwise.ops.labeler import DEFAULT_SOURCE

INTERRUPTED_EXIT = 130
ERRORS_SHOWN = 10


def plan_choices(args: argparse.Namespace) -> PlanChoices:
    return PlanChoices(
        tiers=args.tiers,
        tier_models=args.tier_model or (),
        judge_model=args.judge_model,
        judge_price=args.judge_price,
        mode=args.mode,
        pass_grade=args.pass_grade,
        max_tokens=args.max_tokens,
    )


def run_options(args: argparse.Namespace) -> RunOptions:
    return RunOptions(
        base_url=resolve_base_url(args.base_url),
        api_key=api_key_from_env(args.api_key_env),
        concurrency=args.concurrency,
        max_cost=args.max_cost,
        timeout_seconds=args.timeout,
        retry=RetryPolicy(attempts=args.retries + 1, base_seconds=args.backoff),
        source=args.source,
        progress=not args.no_progress,
    )


def run_label(args: argparse.Namespace) -> int:
    """Plan, estimate, ask for consent, label, write: the command's steps in order."""
    plan = build_plan(load_policy(args.policy), plan_choices(args))
    if args.concurrency < 1:
        raise LabelError("--concurrency must be at least 1")
    logged, errors = read_logs(args.input)
    for error in errors[:ERRORS_SHOWN]:
        sys.stderr.write(f"skipped {error}\n")
    requests = sample_requests(logged, args.sample, args.seed)
    if not requests:
        raise LabelError(f"no readable requests in {', '.join(map(str, args.input))}")
    journal_path = args.journal or args.output.with_name(args.output.name + ".journal.jsonl")
    journal = Journal(journal_path)
    try:
        to_make, cached, cost = pending_estimate(plan, requests, journal)
        sys.stderr.write(plan_message(plan, len(requests), to_make, cached, cost) + "\n")
        if args.dry_run:
            return 0
        if to_make and not args.yes and args.max_cost is None:
            raise LabelError(f"add --yes to spend about {cost:.4f} USD, or --max-cost USD to cap the spend")
        rows, stats = asyncio.run(label_all(plan, requests, journal, run_options(args)))
    finally:
        journal.close()
    write_rows(rows, args.output)
    sys.stderr.write(summary_message(stats, args.output, journal_path) + "\n")
    if args.stats:
        args.stats.write_text(json.dumps(stats.to_json(), indent=1) + "\n", encoding="utf-8")
    if rows:
        sys.stderr.write(f"next: make data USER_DATA={args.output}\n")
    return 0 if rows or stats.not_started else 1


def cmd_label(args: argparse.Namespace) -> int:
    try:
        return run_label(args)
    except KeyboardInterrupt:
        sys.stderr.write(
            "interrupted: every finished call is in the journal; run the same command to continue\n"
        )
        return INTERRUPTED_EXIT


def judge_price(value: str) -> tuple[float, float]:
    try:
        given, _, output = value.partition(",")
        return float(given), float(output)
    except ValueError as err:
        raise argparse.ArgumentTypeError("--judge-price is INPUT,OUTPUT in USD per million tokens") from err


def add_choice_flags(label: argparse.ArgumentParser) -> None:
    """Which tiers answer, with which models, and how the judge decides."""
    label.add_argument(
        "--tiers",
        nargs="+",
        default=None,
        help="tiers to evaluate (default all); the strongest is the reference",
    )
    label.add_argument(
        "--tier-model",
        action="append",
        default=None,
        metavar="TIER=MODEL",
        help="model of a tier (default its first)",
    )
    label.add_argument("--judge-model", default=None, help="judge model (default the top tier's first model)")
    label.add_argument(
        "--judge-price", type=judge_price, default=None, metavar="IN,OUT", help="judge USD per million tokens"
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


def add_run_flags(label: argparse.ArgumentParser) -> None:
    """Where the calls go, how many at once, what they may cost, and where the run keeps its journal."""
    label.add_argument(
        "--base-url", default=None, help="OpenAI-compatible API (default TIERWISE_LLM_BASE_URL)"
    )
    label.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key")
    label.add_argument("--concurrency", type=int, default=8, help="calls in flight")
    label.add_argument("--max-cost", type=float, default=None, help="stop before spending more USD than this")
    label.add_argument("--yes", action="store_true", help="spend the estimated cost without a cap")
    label.add_argument("--dry-run", action="store_true", help="print the plan and cost, call nothing")
    label.add_argument(
        "--journal", type=Path, default=None, help="call journal (default <output>.journal.jsonl)"
    )
    label.add_argument("--timeout", type=float, default=60.0, help="seconds per call")
    label.add_argument("--retries", type=int, default=5, help="retries on 429, 5xx and timeouts")
    label.add_argument("--backoff", type=float, default=0.5, help="first retry delay in seconds (doubles)")
    label.add_argument("--source", default=DEFAULT_SOURCE, help="source name of the rows")
    label.add_argument("--stats", type=Path, default=None, help="also write the run's figures as JSON")
    label.add_argument("--no-progress", action="store_true")


def add_label_command(sub: Any) -> None:
    label = sub.add_parser(
        "label",
        help="judge-labeled training rows from request logs (calls your models)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_files(label, "request logs: .jsonl, .txt or .parquet")
    add_output_file(label, "labeled JSONL for make data USER_DATA=")
    add_policy(label, "routing policy YAML (tiers, models and prices)")
    add_choice_flags(label)
    add_run_flags(label)
    label.set_defaults(func=cmd_label)
