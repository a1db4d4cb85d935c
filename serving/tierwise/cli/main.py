"""The `tierwise` command: batch classification of JSONL requests with a model folder.

    tierwise classify --input requests.jsonl --output routed.jsonl [--model models/default]

Each input row carries `text` or OpenAI-style `messages` (other fields pass through); each output
row adds `tier`, `confidence`, `probabilities`, `predicted_tier`, `escalated` and `token_count`.
Unreadable rows are reported with their line number on stderr and the rest are still classified.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tierwise.cli.analytics import add_analytics_commands, resolve_db
from tierwise.core.classifier import TierClassifier
from tierwise.core.model_folder import ModelFolderError
from tierwise.core.request_text import ClassifierInput, RequestTextError, request_input
from tierwise.ops.label import add_label_command
from tierwise.service.settings import DEFAULT_MODEL_DIR


def read_requests(
    stream: IO[bytes], errors: list[str]
) -> Iterator[tuple[int, dict[str, Any], ClassifierInput]]:
    """(line number, row, text) for every usable line; problems are appended to `errors`."""
    for number, raw in enumerate(stream, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
            if not isinstance(row, dict):
                raise RequestTextError("row must be a JSON object")
            yield number, row, request_input(row)
        except UnicodeDecodeError:
            errors.append(f"line {number}: not valid UTF-8")
        except json.JSONDecodeError as err:
            errors.append(f"line {number}: invalid JSON ({err.msg})")
        except RequestTextError as err:
            errors.append(f"line {number}: {err}")


def classify_stream(
    classifier: TierClassifier, source: IO[bytes], sink: IO[str], batch_size: int, q: float | None
) -> tuple[int, list[str]]:
    """Classify rows in batches, in input order; returns (rows written, error messages)."""
    errors: list[str] = []
    written = 0
    batch: list[tuple[dict[str, Any], ClassifierInput]] = []

    def flush() -> None:
        nonlocal written
        predictions = classifier.classify([text for _, text in batch], q=q)
        for (row, _), p in zip(batch, predictions, strict=True):
            row.update(
                {
                    "tier": p.tier,
                    "confidence": p.confidence,
                    "probabilities": p.probabilities,
                    "predicted_tier": p.predicted_tier,
                    "escalated": p.escalated,
                    "token_count": p.token_count,
                    "model_version": classifier.version,
                }
            )
            sink.write(json.dumps(row, ensure_ascii=False) + "\n")
        written += len(batch)
        batch.clear()

    for _, row, text in read_requests(source, errors):
        batch.append((row, text))
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    return written, errors


def cmd_classify(args: argparse.Namespace) -> int:
    try:
        classifier = TierClassifier(args.model, intra_op_threads=args.threads)
    except ModelFolderError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    if not args.input.is_file():
        sys.stderr.write(f"error: input file {args.input} does not exist\n")
        return 2
    started = time.perf_counter()
    with open(args.input, "rb") as source, open(args.output, "w", encoding="utf-8") as sink:
        written, errors = classify_stream(classifier, source, sink, args.batch_size, args.q)
    elapsed = time.perf_counter() - started
    for message in errors:
        sys.stderr.write(f"{args.input}: {message}\n")
    rate = written / elapsed if elapsed > 0 else 0.0
    sys.stderr.write(
        f"classified {written} rows in {elapsed:.2f} s ({rate:.0f} rows/s) with {classifier.version}; "
        f"{len(errors)} unreadable row(s) skipped\n"
    )
    return 1 if errors and not written else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tierwise", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    classify = sub.add_parser("classify", help="classify a JSONL file of requests")
    classify.add_argument("--input", type=Path, required=True)
    classify.add_argument("--output", type=Path, required=True)
    classify.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="model folder")
    classify.add_argument(
        "--batch-size", type=int, default=256, help="rows read per call; sorted by length inside"
    )
    classify.add_argument(
        "--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = all cores)"
    )
    classify.add_argument("--q", type=float, default=None, help="escalation threshold (default: the model's)")
    classify.set_defaults(func=cmd_classify)
    add_analytics_commands(sub)
    add_label_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    resolve_db(args)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
