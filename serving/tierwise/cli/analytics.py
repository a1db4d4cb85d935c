"""The decision-log subcommands of `tierwise`: report, export-feedback, db upgrade.

    tierwise report --since 7d [--out-dir runs/report] [--db URL] [--model DIR] [--policy YAML]
    tierwise export-feedback --output feedback.jsonl [--since 30d]  # then: make data USER_DATA=feedback.jsonl
    tierwise db upgrade [--db URL]                                   # Alembic migrations to the newest schema

The decision log is `--db` (a SQLAlchemy URL; default TIERWISE_DECISION_DB, else runs/decisions.sqlite).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tierwise.cli.options import UsageError, add_db, add_model, add_out_dir, add_output_file, add_policy

if TYPE_CHECKING:
    from tierwise.evidence.decision_log import DecisionStore

DEFAULT_REPORT_DIR = Path("runs/report")


def open_store(url: str, must_exist: bool = True) -> DecisionStore:
    """The decision log at `url`, migrated to the newest schema (raises DecisionLogError naming the fix).
    A command that only reads it (`must_exist`) never creates a SQLite file: a mistyped path would
    otherwise report 0 decisions as if the service had logged none."""
    from sqlalchemy.exc import SQLAlchemyError

    from tierwise.evidence.decision_log import DecisionLogError, DecisionStore, missing_sqlite_file

    missing = missing_sqlite_file(url) if must_exist else None
    if missing is not None:
        raise DecisionLogError(
            f"the decision log {missing} does not exist; pass --db with the database the service writes "
            "(its TIERWISE_DECISION_DB), or create an empty one with `tierwise db upgrade --db URL`"
        )
    try:
        store = DecisionStore(url)
    except SQLAlchemyError as err:  # e.g. a dialect or driver that is not installed
        raise DecisionLogError(
            f"cannot open the decision log at {url!r} ({type(err).__name__}: {err}); "
            "pass --db with a SQLAlchemy URL whose driver is installed (or set TIERWISE_DECISION_DB)"
        ) from err
    store.upgrade()
    return store


def window_edge(flag: str, value: str | None) -> datetime | None:
    """`--since`/`--until` as a time; raises UsageError naming the flag for a value it cannot read."""
    from tierwise.ops.feedback_report import parse_since

    if value is None:
        return None
    try:
        return parse_since(value)
    except ValueError as err:
        raise UsageError(str(err).replace("--since", flag, 1)) from err


def cmd_report(args: argparse.Namespace) -> int:
    from tierwise.core.policy_file import load_policy
    from tierwise.ops.cascade_report import cascade_checks, cascade_summary
    from tierwise.ops.feedback_report import build_report, load_training_metrics, write_report
    from tierwise.ops.segment_report import segment_settings_from_files, segment_summary
    from tierwise.ops.shadow_report import shadow_outcomes, shadow_summary

    since = window_edge("--since", args.since)
    until = window_edge("--until", args.until)
    policy = load_policy(args.policy)
    store = open_store(args.db)
    try:
        rows = store.labeled_decisions(since, until)
        shadow = shadow_summary(shadow_outcomes(store, since, until), policy.tier_names)
        checks = cascade_checks(store, since, until)
        settings = segment_settings_from_files(store, args.policy, args.model, policy, rows)
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
    report["cascade"] = cascade_summary(rows, checks, policy)
    report["segments"] = segment_summary(rows, policy, settings)
    if args.compare_models:
        from tierwise.ops.feedback_report import rescore_models

        report["rescored"] = rescore_models(rows, policy, args.compare_models)
    path = write_report(report, args.out_dir, plots=not args.no_plots)
    size = sum(p.stat().st_size for p in args.out_dir.iterdir() if p.is_file())
    sys.stderr.write(
        f"report on {report['decisions']} decisions ({report['with_feedback']} with feedback): {path} "
        f"({size / 1024:.0f} KiB with plots)\n"
    )
    return 0


def cmd_export_feedback(args: argparse.Namespace) -> int:
    from tierwise.core.policy_file import load_policy
    from tierwise.ops.feedback_report import feedback_rows

    since = window_edge("--since", args.since)
    policy = load_policy(args.policy)
    store = open_store(args.db)
    try:
        rows = store.labeled_decisions(since)
    finally:
        store.close()
    records, skipped = feedback_rows(rows, policy.tier_names, args.source)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as sink:
        for record in records:
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")
    sys.stderr.write(f"wrote {len(records)} labeled rows to {args.output}\n")
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
        sys.stderr.write(f"next: make data USER_DATA={args.output} && make train\n")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    store = open_store(args.db, must_exist=False)
    try:
        revision = store.current_revision()
    finally:
        store.close()
    sys.stderr.write(f"decision log at {args.db} is at schema revision {revision}\n")
    return 0


def add_report_command(sub: Any) -> None:
    report = sub.add_parser("report", help="routing report from the decision log and feedback")
    report.add_argument("--since", default="7d", help="7d, 24h, 30m, 2w or an ISO date (default: 7d)")
    report.add_argument("--until", default=None, help="end of the window (default: now)")
    add_db(report)
    add_policy(report, "routing policy YAML (prices, tiers)")
    add_model(report, "model folder whose training metrics to compare")
    add_out_dir(report, DEFAULT_REPORT_DIR)
    report.add_argument("--no-plots", action="store_true", help="markdown and JSON only")
    report.add_argument(
        "--compare-models",
        type=Path,
        nargs="+",
        default=None,
        metavar="DIR",
        help="model folders (e.g. primary and canary) to re-score on the same labeled prompts (needs stored prompts)",
    )
    report.set_defaults(func=cmd_report)


def add_analytics_commands(sub: Any) -> None:
    """Register report, export-feedback and db on the `tierwise` subparsers."""
    add_report_command(sub)

    export = sub.add_parser("export-feedback", help="labeled JSONL from feedback, for make data USER_DATA=")
    add_output_file(export, "labeled JSONL for make data USER_DATA=")
    export.add_argument("--since", default=None, help="only decisions since (7d, 2026-11-01, ...)")
    add_db(export)
    add_policy(export, "routing policy YAML (its tiers name the labels)")
    export.add_argument("--source", default="production-feedback", help="source name of the exported rows")
    export.set_defaults(func=cmd_export_feedback)

    database = sub.add_parser("db", help="decision log schema (Alembic migrations)")
    database_sub = database.add_subparsers(dest="db_command", required=True)
    upgrade = database_sub.add_parser("upgrade", help="migrate the decision log to the newest schema")
    add_db(upgrade)
    upgrade.set_defaults(func=cmd_db_upgrade)
