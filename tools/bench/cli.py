"""`python -m tools.bench`: the flags, and the order of the runs (see tools/bench/__init__.py)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tierwise.service.settings import Settings, get_settings

import tools.bench
from tools.bench.http_load import ServerRun, run_server_load
from tools.bench.latency import LatencyRow, measure_in_process
from tools.bench.prompts import DEFAULT_PROMPTS, read_prompts
from tools.bench.report import markdown_report
from tools.bench.shadow import (
    CONTROLLER,
    REQUEST_PATH,
    SHADOW,
    Comparison,
    PairedOverhead,
    routed_body,
    run_paired_overhead,
)
from tools.bench.torch_eager import TorchEagerClassifier, build_stand_in_model, serve_torch
from tools.harness import REPO_DIR, SERVICE_COMMAND

DEFAULT_CHECKPOINT = REPO_DIR / "runs" / "default" / "checkpoint"
TOKEN_TARGETS = (16, 64, 256)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    settings = get_settings()
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description=tools.bench.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", type=Path, default=settings.model_dir, help="model folder to measure")
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS, help="JSONL with a `text` field")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per HTTP load level")
    parser.add_argument("--warm-up", type=float, default=2.0, help="unmeasured seconds before each level")
    parser.add_argument("--concurrency", default="1,8,32,64", help="comma-separated client counts")
    parser.add_argument("--iterations", type=int, default=1000, help="in-process calls per prompt length")
    parser.add_argument("--torch-checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument(
        "--skip-shadow",
        action="store_true",
        help="leave out the paired overhead runs (shadow evaluation and per-segment controller)",
    )
    parser.add_argument(
        "--shadow-overhead",
        action="store_true",
        help="only the paired overhead runs, both comparisons: shadow off vs on, and on vs control "
        "(the per-segment controller); no in-process, plain HTTP or torch runs",
    )
    parser.add_argument(
        "--controller-overhead",
        action="store_true",
        help="only the per-segment controller's comparisons (off vs guarded: the request path; on vs "
        "control: as deployed, with the shadow); with --shadow-overhead, all three",
    )
    parser.add_argument("--shadow-share", type=float, default=0.1, help="shadow share of the `on` service")
    parser.add_argument(
        "--shadow-pairs", type=int, default=3, help="alternated pairs per level and comparison"
    )
    parser.add_argument("--shadow-duration", type=float, default=5.0, help="seconds per paired run")
    parser.add_argument("--shadow-concurrency", default="1,8", help="client counts for the paired runs")
    parser.add_argument(
        "--shadow-latency-ms", type=float, default=20.0, help="the fake LLM server's answer latency"
    )
    parser.add_argument("--output", type=Path, help="also write the markdown table to this file")
    parser.add_argument("--serve-torch", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


@contextlib.contextmanager
def model_under_test(model_dir: Path, settings: Settings) -> Iterator[tuple[Path, str]]:
    """(the folder to measure, how the report names it): `model_dir`, or an untrained stand-in of the
    same architecture when it holds no model (removed afterwards)."""
    from tierwise.core.policy_file import load_policy

    if (model_dir / "manifest.json").is_file():
        shown = model_dir.relative_to(REPO_DIR) if model_dir.is_relative_to(REPO_DIR) else model_dir
        yield model_dir, f"`{shown}`"
        return
    print(f"{model_dir} has no model; building an untrained stand-in MiniLM-L6 (same cost)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="tierwise-bench-") as folder:
        tiers = load_policy(settings.policy_file).tier_names
        yield (
            build_stand_in_model(Path(folder) / "stand-in", tiers),
            "untrained stand-in (all-MiniLM-L6-v2 + random head, fp32 ONNX): `make train` for the real one",
        )


def torch_latency(
    args: argparse.Namespace, model_dir: Path, checkpoint: Path | None, threads: int, pool: list[str]
) -> tuple[list[LatencyRow], str]:
    """(PyTorch eager rows, the note saying what was measured or why not)."""
    try:
        eager = TorchEagerClassifier(model_dir, checkpoint, threads)
        rows = measure_in_process(
            "pytorch-eager",
            eager.predict_proba,
            eager.encoder,
            pool,
            TOKEN_TARGETS,
            max(100, args.iterations // 4),
        )
    except Exception as err:  # the comparison is optional: torch may not be installed
        return [], f"PyTorch eager: not measured ({type(err).__name__}: {err})."
    weights = "the training checkpoint" if eager.trained else "the base model with an untrained head"
    note = (
        f"PyTorch eager: transformers `AutoModelForSequenceClassification` from {weights} "
        "(same architecture, tokenizer and truncation), torch.inference_mode, one request per call."
    )
    return rows, note


def http_runs(
    args: argparse.Namespace, model_dir: Path, bodies: list[bytes], with_torch: bool, log_dir: Path
) -> list[ServerRun]:
    """The service with micro-batching on, then off, then (`with_torch`) PyTorch eager, in turn."""
    servers = [
        ("onnx, micro-batching", "true", SERVICE_COMMAND),
        ("onnx, no batching", "false", SERVICE_COMMAND),
    ]
    if with_torch:
        torch_command = (sys.executable, "-m", "tools.bench", "--serve-torch")
        torch_command += ("--torch-checkpoint", str(args.torch_checkpoint))
        servers.append(("pytorch eager, no batching", "false", torch_command))
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    runs = []
    for index, (name, batching, command) in enumerate(servers):
        print(f"HTTP load: {name} ...", file=sys.stderr)
        settings: dict[str, object] = {"micro_batching": batching, "workers": 1}
        log_path = log_dir / f"server-{index}.log"
        runs.append(
            run_server_load(
                name, command, model_dir, settings, log_path, bodies, levels, args.duration, args.warm_up
            )
        )
    return runs


def comparisons(args: argparse.Namespace) -> list[Comparison]:
    """The paired comparisons to run: all three, unless only --controller-overhead asks for the controller's."""
    if args.controller_overhead and not args.shadow_overhead:
        return [REQUEST_PATH, CONTROLLER]
    if args.shadow_overhead or args.controller_overhead or not (args.skip_shadow or args.skip_http):
        return [SHADOW, REQUEST_PATH, CONTROLLER]
    return []


def paired_overhead(
    args: argparse.Namespace, model_dir: Path, policy_file: Path, pool: list[str]
) -> PairedOverhead:
    wanted = comparisons(args)
    names = ", ".join(f"{base} vs {variant}" for base, variant in wanted)
    print(
        f"HTTP load: paired overhead runs ({names}), shadow share {args.shadow_share:g} ...", file=sys.stderr
    )
    return run_paired_overhead(
        model_dir,
        policy_file,
        [routed_body(text) for text in pool],
        [int(c) for c in args.shadow_concurrency.split(",") if c.strip()],
        args.shadow_pairs,
        args.shadow_duration,
        args.warm_up,
        args.shadow_share,
        args.shadow_latency_ms,
        wanted,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    checkpoint = args.torch_checkpoint if args.torch_checkpoint.is_dir() else None
    if args.serve_torch:
        serve_torch(checkpoint)
        return 0
    from tierwise.core.classifier import TierClassifier

    settings = get_settings()
    pool, prompt_note = read_prompts(args.prompts)
    bodies = [json.dumps({"text": text}).encode() for text in pool]
    with (
        model_under_test(Path(args.model), settings) as (model_dir, model_note),
        tempfile.TemporaryDirectory(prefix="tierwise-bench-logs-") as log_dir,
    ):
        latency: list[LatencyRow] = []
        paired_only = args.shadow_overhead or args.controller_overhead
        torch_note = "" if paired_only else "PyTorch eager: skipped (--skip-torch)."
        if not paired_only:
            classifier = TierClassifier(model_dir, intra_op_threads=settings.onnx_threads)
            print("in-process latency ...", file=sys.stderr)
            latency = measure_in_process(
                "onnxruntime",
                classifier.predict_proba,
                classifier.encoder,
                pool,
                TOKEN_TARGETS,
                args.iterations,
            )
        if not args.skip_torch and not paired_only:
            torch_rows, torch_note = torch_latency(args, model_dir, checkpoint, settings.onnx_threads, pool)
            latency += torch_rows
        runs: list[ServerRun] = []
        if not args.skip_http and not paired_only:
            with_torch = not args.skip_torch and "not measured" not in torch_note
            runs = http_runs(args, model_dir, bodies, with_torch, Path(log_dir))
        shadow = None
        if comparisons(args):
            shadow = paired_overhead(args, model_dir, settings.policy_file, pool)
    report = markdown_report(model_note, prompt_note, latency, runs, args.duration, torch_note, shadow)
    print(report)
    if args.output:
        args.output.write_text(report, encoding="utf-8")
    return 0
