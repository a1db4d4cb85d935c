"""`tierwise audit --input LOG [LOG ...]`: the tier mix and projected savings of request logs.

    tierwise audit --input requests.jsonl [--out-dir runs/audit] [--model DIR] [--policy YAML]
    tierwise audit --input logs/*.parquet --engine ray [--ray-address ADDR] [--ray-actors 8]

Writes audit.json, audit.md and two plots into --out-dir (tierwise/ops/audit.py does the work).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tierwise.cli.options import add_input_files, add_model, add_out_dir, add_policy
from tierwise.ops.audit import ENGINES, AuditOptions, run_audit
from tierwise.ops.audit_report import write_audit

DEFAULT_AUDIT_DIR = Path("runs/audit")


def cmd_audit(args: argparse.Namespace) -> int:
    options = AuditOptions(
        engine=args.engine,
        batch_size=args.batch_size,
        threads=args.threads,
        ray_address=args.ray_address,
        ray_actors=args.ray_actors,
        period_days=args.period_days,
        show_progress=not args.no_progress,
    )
    summary, meta = run_audit(args.input, args.model, args.policy, options)
    path = write_audit(summary, meta, args.out_dir, plots=not args.no_plots)
    size = sum(p.stat().st_size for p in args.out_dir.iterdir() if p.is_file())
    sys.stderr.write(
        f"audited {summary['requests']} requests ({summary['unreadable']} unreadable) in {meta['seconds']:.1f} s "
        f"({meta['requests_per_second']:.0f}/s, engine {meta['engine']}): routing saves "
        f"{100 * summary['savings_share']:.1f}% vs all-{summary['frontier_tier']}; report {path} "
        f"({size / 1024:.0f} KiB)\n"
    )
    return 0 if summary["requests"] else 1


def add_audit_command(sub: Any) -> None:
    audit = sub.add_parser(
        "audit",
        help="tier mix and projected savings of request logs (JSONL, .txt, Parquet)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_files(audit, "request logs: .jsonl, .txt or .parquet")
    add_out_dir(audit, DEFAULT_AUDIT_DIR)
    add_model(audit)
    add_policy(audit, "routing policy YAML (prices, tiers)")
    audit.add_argument("--engine", choices=ENGINES, default="local", help="local process or Ray Data")
    audit.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster address (default: start a local Ray); logs and model must be at the same paths on the nodes",
    )
    audit.add_argument("--ray-actors", type=int, default=None, help="Ray actors (default: one per CPU)")
    audit.add_argument("--batch-size", type=int, default=256, help="requests per classifier batch")
    audit.add_argument("--threads", type=int, default=0, help="onnxruntime threads, local engine (0 = all)")
    audit.add_argument(
        "--period-days", type=float, default=None, help="days the logs cover, to project monthly"
    )
    audit.add_argument("--no-plots", action="store_true")
    audit.add_argument("--no-progress", action="store_true")
    audit.set_defaults(func=cmd_audit)
