"""The analyst subcommands of `tierwise`: report, export-feedback, db upgrade, audit.

    tierwise report --since 7d [--out runs/report] [--db URL] [--model models/default]
    tierwise export-feedback --out feedback.jsonl [--since 30d]   # then: make data USER_DATA=feedback.jsonl
    tierwise db upgrade [--db URL]                                 # Alembic migrations to the newest schema
    tierwise audit LOGS... [--engine ray] [--out runs/audit]       # tier mix and savings of request logs

The decision database is TIERWISE_DECISION_DB (a SQLAlchemy URL; SQLite runs/decisions.sqlite by default).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tierwise.service.settings import DEFAULT_MODEL_DIR, DEFAULT_POLICY_FILE, Settings


def _default_db() -> str:
    return Settings().decision_db


def _open_store(url: str) -> Any:
    from tierwise.ops.decision_log import DecisionStore

    store = DecisionStore(url)
    store.upgrade()
    return store


def cmd_report(args: argparse.Namespace) -> int:
    from tierwise.core.policy import load_policy
    from tierwise.ops.feedback_report import build_report, load_training_metrics, parse_since, write_report

    try:
        since = parse_since(args.since) if args.since else None
        until = parse_since(args.until) if args.until else None
    except ValueError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    policy = load_policy(args.policy)
    from tierwise.ops.shadow_report import shadow_outcomes, shadow_summary

    store = _open_store(args.db)
    try:
        rows = store.labeled_decisions(since, until)
        shadow = shadow_summary(shadow_outcomes(store, since, until), policy.tier_names)
    finally:
        store.close()
    training = load_training_metrics(args.model)
    if training is None:
        sys.stderr.write(
            f"note: {args.model}/report/metrics.json not found; drift against the training data is skipped "
            "(pass --model with the folder that serves)\n"
        )
    report = build_report(rows, policy, training, since=since, until=until or datetime.now(UTC))
    report["shadow"] = shadow
    if args.compare_models:
        from tierwise.ops.feedback_report import rescore_models

        report["rescored"] = rescore_models(rows, policy, args.compare_models)
    path = write_report(report, args.out, plots=not args.no_plots)
    size = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    sys.stderr.write(
        f"report on {report['decisions']} decisions ({report['with_feedback']} with feedback): {path} "
        f"({size / 1024:.0f} KiB with plots)\n"
    )
    return 0


def cmd_export_feedback(args: argparse.Namespace) -> int:
    from tierwise.core.policy import load_policy
    from tierwise.ops.feedback_report import feedback_rows, parse_since

    since = parse_since(args.since) if args.since else None
    policy = load_policy(args.policy)
    store = _open_store(args.db)
    try:
        rows = store.labeled_decisions(since)
    finally:
        store.close()
    records, skipped = feedback_rows(rows, policy.tier_names, args.source)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as sink:
        for record in records:
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")
    sys.stderr.write(f"wrote {len(records)} labeled rows to {args.out}\n")
    if skipped["no_prompt_text"]:
        sys.stderr.write(
            f"skipped {skipped['no_prompt_text']} labeled decision(s) without stored prompt text: set "
            "TIERWISE_RECORD_PROMPTS=true on the service to keep prompts for retraining\n"
        )
    if skipped["unplaceable"]:
        sys.stderr.write(
            f"skipped {skipped['unplaceable']} outcome(s) that allow no tier (e.g. the top tier failed)\n"
        )
    if records:
        sys.stderr.write(f"next: make data USER_DATA={args.out} && make train\n")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    store = _open_store(args.db)
    try:
        revision = store.current_revision()
    finally:
        store.close()
    sys.stderr.write(f"decision log at {args.db} is at schema revision {revision}\n")
    return 0


def add_analytics_commands(sub: Any) -> None:
    """Register report, export-feedback and db on the `tierwise` subparsers."""
    report = sub.add_parser("report", help="routing report from the decision log and feedback")
    report.add_argument("--since", default="7d", help="7d, 24h, 30m, 2w or an ISO date (default: 7d)")
    report.add_argument("--until", default=None, help="end of the window (default: now)")
    report.add_argument("--db", default=None, help="SQLAlchemy URL (default: TIERWISE_DECISION_DB)")
    report.add_argument(
        "--policy", type=Path, default=DEFAULT_POLICY_FILE, help="policy YAML (prices, tiers)"
    )
    report.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL_DIR, help="model folder whose training metrics to compare"
    )
    report.add_argument("--out", type=Path, default=Path("runs/report"), help="output folder")
    report.add_argument("--no-plots", action="store_true", help="markdown and JSON only")
    report.add_argument(
        "--compare-models",
        type=Path,
        nargs="+",
        default=None,
        help="model folders (e.g. primary and canary) to re-score on the same labeled prompts (needs stored prompts)",
    )
    report.set_defaults(func=cmd_report)

    export = sub.add_parser("export-feedback", help="labeled JSONL from feedback, for make data USER_DATA=")
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--since", default=None, help="only decisions since (7d, 2026-11-01, ...)")
    export.add_argument("--db", default=None, help="SQLAlchemy URL (default: TIERWISE_DECISION_DB)")
    export.add_argument("--policy", type=Path, default=DEFAULT_POLICY_FILE)
    export.add_argument("--source", default="production-feedback", help="source name of the exported rows")
    export.set_defaults(func=cmd_export_feedback)

    database = sub.add_parser("db", help="decision log schema (Alembic migrations)")
    database_sub = database.add_subparsers(dest="db_command", required=True)
    upgrade = database_sub.add_parser("upgrade", help="migrate the decision log to the newest schema")
    upgrade.add_argument("--db", default=None, help="SQLAlchemy URL (default: TIERWISE_DECISION_DB)")
    upgrade.set_defaults(func=cmd_db_upgrade)
    add_audit_command(sub)


def cmd_audit(args: argparse.Namespace) -> int:
    from tierwise.ops.audit import main_audit

    return main_audit(args)


def add_audit_command(sub: Any) -> None:
    audit = sub.add_parser(
        "audit", help="tier mix and projected savings of request logs (JSONL, .txt, Parquet)"
    )
    audit.add_argument("logs", type=Path, nargs="+", help="request logs: .jsonl, .txt or .parquet")
    audit.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="model folder")
    audit.add_argument("--policy", type=Path, default=DEFAULT_POLICY_FILE, help="policy YAML (prices, tiers)")
    audit.add_argument("--out", type=Path, default=Path("runs/audit"), help="output folder")
    audit.add_argument(
        "--engine", choices=("local", "ray"), default="local", help="local process or Ray Data"
    )
    audit.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster address (default: start a local Ray); logs and model must be at the same paths on the nodes",
    )
    audit.add_argument("--workers", type=int, default=None, help="Ray actors (default: one per CPU)")
    audit.add_argument("--batch-size", type=int, default=256, help="requests per classifier batch")
    audit.add_argument("--threads", type=int, default=0, help="onnxruntime threads, local engine (0 = all)")
    audit.add_argument(
        "--period-days", type=float, default=None, help="days the logs cover, to project monthly"
    )
    audit.add_argument("--no-plots", action="store_true")
    audit.add_argument("--no-progress", action="store_true")
    audit.set_defaults(func=cmd_audit)


def resolve_db(args: argparse.Namespace) -> None:
    if hasattr(args, "db") and args.db is None:
        args.db = _default_db()
