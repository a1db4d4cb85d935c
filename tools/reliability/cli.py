"""`python -m tools.reliability`: the flags, the order of the cases, the table."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from tierwise.core.model_folder import MANIFEST_FILE
from tierwise.service.settings import Settings

import tools.reliability
from tools.bench.prompts import DEFAULT_PROMPTS, FALLBACK_PROMPTS, read_prompts
from tools.reliability.database import postgres_case
from tools.reliability.drain import drain_case, serve_slow_classifier
from tools.reliability.faults import hang_and_crash_case, startup_fault_cases
from tools.reliability.fixtures import in_process_settings
from tools.reliability.fuzz import fuzz_app
from tools.reliability.load import load_case
from tools.reliability.metrics import metrics_case
from tools.reliability.oversize import oversize_case
from tools.reliability.privacy import privacy_case, privacy_scan_time_case
from tools.reliability.reload import admin_reload_workers_case, reload_case
from tools.reliability.report import CaseResult, markdown_table
from tools.reliability.security import auth_case, prompt_log_case, supply_chain_case


def fuzz_case(model_dir: Path, work_dir: Path, fuzz_cases: int) -> CaseResult:
    """The fuzz run with the service's default decision log (POST /feedback is fuzzed with it)."""
    from tierwise.service.app import create_app

    key = uuid.uuid4().hex
    fuzz_settings = in_process_settings(
        model_dir,
        micro_batching=False,
        api_keys=key,
        record_decisions=True,  # the service's default: POST /feedback is fuzzed with its log
        decision_db=f"sqlite:///{work_dir / 'fuzz-decisions.sqlite'}",
    )
    # The GET operations have nothing to vary (about one case each): the budget goes to the four
    # operations with a body, positive and negative.
    fuzz = fuzz_app(create_app(fuzz_settings), -(-fuzz_cases // 8) + 20, {"X-API-Key": key})
    if fuzz.tried < fuzz_cases:
        fuzz.failures += 1
        fuzz.problems.append(f"only {fuzz.tried} of the {fuzz_cases} cases asked for were generated")
    return fuzz


def server_cases(
    args: argparse.Namespace, model_dir: Path, work_dir: Path, prompts: list[str]
) -> Iterator[CaseResult | tuple[CaseResult, str, str]]:
    """The cases, in the order they run; the load case also yields its server log and canary word."""
    side_clients = min(16, args.concurrency)  # clients of the reload and drain runs
    several = max(2, args.workers)  # the cases about several workers need at least two
    yield fuzz_case(model_dir, work_dir, args.fuzz_cases)
    yield load_case(model_dir, work_dir, prompts, args.requests, args.concurrency, args.workers)
    yield from startup_fault_cases(model_dir, work_dir, workers=args.workers)
    for method in ("sighup", "admin"):
        yield reload_case(
            model_dir, work_dir, prompts, method, args.workers, args.reload_seconds, side_clients
        )
    yield admin_reload_workers_case(model_dir, work_dir, workers=several)
    yield oversize_case(model_dir, work_dir, workers=args.workers)
    yield metrics_case(model_dir, work_dir, workers=several)
    yield postgres_case(model_dir, work_dir, workers=several)
    yield hang_and_crash_case(model_dir)
    yield drain_case(model_dir, work_dir, prompts, args.workers, side_clients)
    yield auth_case(model_dir)


def run_suite(args: argparse.Namespace, progress: Callable[[str], None]) -> list[CaseResult]:
    model_dir = Path(args.model).resolve()
    prompts, _ = read_prompts(Path(args.prompts)) if args.prompts else (FALLBACK_PROMPTS, "")
    results: list[CaseResult] = []
    server_logs: list[tuple[str, str]] = []  # (log text, canary word) of the load run

    def record(result: CaseResult) -> None:
        results.append(result)
        progress(str(result))

    with tempfile.TemporaryDirectory(prefix="tierwise-reliability-") as tmp:
        work_dir = Path(tmp)
        for outcome in server_cases(args, model_dir, work_dir, prompts):
            if isinstance(outcome, tuple):
                result, log, canary = outcome
                server_logs.append((log, canary))
                outcome = result
            record(outcome)
        record(prompt_log_case(model_dir, server_logs))
        record(supply_chain_case())
        record(privacy_case())
        record(privacy_scan_time_case())
        if args.keep_logs:
            shutil.copytree(
                work_dir, args.keep_logs, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.onnx")
            )
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.reliability",
        description=tools.reliability.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model", default=str(Settings().model_dir), help="model folder (TIERWISE_MODEL_DIR)"
    )
    parser.add_argument(
        "--prompts", default=str(DEFAULT_PROMPTS), help="JSONL with 'text' fields for the load"
    )
    parser.add_argument("--fuzz-cases", type=int, default=1000, help="schemathesis cases in total (at least)")
    parser.add_argument("--requests", type=int, default=20_000, help="requests in the load run")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent clients in the load run")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers for the server runs")
    parser.add_argument("--reload-seconds", type=float, default=20.0, help="load duration around a reload")
    parser.add_argument("--output", help="also write the table to this file")
    parser.add_argument("--keep-logs", help="copy the server logs to this folder")
    parser.add_argument(
        "--serve-slow-classifier",
        type=float,
        metavar="MS",
        help="instead of the suite: serve with a classifier taking MS per call (for the drain test)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_slow_classifier is not None:
        serve_slow_classifier(args.serve_slow_classifier)
        return 0
    model_dir = Path(args.model)
    if not (model_dir / MANIFEST_FILE).is_file():
        print(f"no model in {model_dir}; run `make train` or pass --model", file=sys.stderr)
        return 2
    started = time.perf_counter()
    results = run_suite(args, lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    header = (
        f"## make reliability: {model_dir} — {args.requests} requests at {args.concurrency} clients, "
        f"{args.workers} workers, {os.cpu_count()} CPUs, {time.perf_counter() - started:.0f} s"
    )
    table = markdown_table(results, header)
    print(table)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(table, encoding="utf-8")
    return 0 if all(result.passed for result in results) else 1
