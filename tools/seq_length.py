"""`make seq-length`: what the encoder's max length costs (latency) and buys (routing quality).

    python -m tools.seq_length --model models/default --lengths 256,192,128,96 --output runs/seq_length.md

The same weights are served at each max length, with the model folder's truncation scaled to it
(`task_first` keeps the task's head and tail and a proportionally shorter context sketch; `head_tail`
its head and tail), so the table isolates the sequence length. Per length:
- how many of the bench's request bodies (`make bench-requests`: test rows, half bare, half wrapped
  by the evaluation-only wrappers) it truncates;
- the encoder's own latency for one request per call (no HTTP, no batching), p50 / p99 / mean, with
  the service's onnxruntime thread setting;
- the routed decisions' quality on seeded samples of `test` and the held-out sources, bare and under
  every evaluation-only wrapper condition: macro-F1 of the most likely tier, the tier flip rate, the
  AUC of P(tier > fast), and the share of routed tiers equal to those at the folder's own length.
A shorter length the quality columns do not separate from the full one is capacity for free; the
model was trained at its own length, so retraining at the shorter one can only do better.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tierwise.core.classifier import TierClassifier
from tierwise.core.model_folder import MANIFEST_FILE
from tierwise.core.request_text import ClassifierInput, request_input
from tierwise.training import paths
from tierwise.training.evaluation import allowed_bounds
from tierwise.training.invariance import (
    condition_metrics,
    pooled_wrapped_metrics,
    read_splits,
    route_rows,
    sample_rows,
)
from tierwise.training.wrappers import CONDITIONS, WrapperLibrary

from tools.harness import REPO_DIR, percentile

DEFAULT_REQUESTS = REPO_DIR / "data" / "processed" / "bench_requests.jsonl"
QUALITY_SPLITS = ("test", "heldout")


def scaled_manifest(manifest: dict[str, Any], max_length: int) -> dict[str, Any]:
    """`manifest` with max_length and its truncation scaled to `max_length` (2 special tokens kept)."""
    trunc = dict(manifest["truncation"])
    content = max_length - 2
    if content < 8:
        raise ValueError(f"max length {max_length} leaves fewer than 8 content tokens")
    scale = content / (trunc["head_tokens"] + trunc["tail_tokens"])
    trunc["head_tokens"] = max(1, round(trunc["head_tokens"] * scale))
    trunc["tail_tokens"] = content - trunc["head_tokens"]
    trunc["context_tokens"] = min(round(trunc.get("context_tokens", 0) * scale), content - 1)
    return {**manifest, "max_length": max_length, "truncation": trunc}


def folder_at_length(model_dir: Path, max_length: int, work_dir: Path) -> Path:
    """A copy of `model_dir` whose manifest serves at `max_length` (the ONNX graph's length is dynamic)."""
    folder = work_dir / f"len{max_length}"
    shutil.copytree(model_dir, folder, ignore=shutil.ignore_patterns("report"))
    manifest = json.loads((model_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    (folder / MANIFEST_FILE).write_text(json.dumps(scaled_manifest(manifest, max_length)), encoding="utf-8")
    return folder


def latency_ms(classifier: TierClassifier, inputs: list[ClassifierInput], repeats: int) -> list[float]:
    """Seconds of one `predict_proba` call per request, in ms, `repeats` passes over `inputs`."""
    classifier.predict_proba(inputs[:8])  # warm-up
    out = []
    for _ in range(repeats):
        for item in inputs:
            started = time.perf_counter()
            classifier.predict_proba([item])
            out.append((time.perf_counter() - started) * 1000.0)
    return out


def split_quality(
    classifier: TierClassifier, rows: list[dict], library: WrapperLibrary, seed: int
) -> tuple[dict[str, Any], np.ndarray]:
    """Bare and pooled-wrapped metrics of one split, and every routed tier (bare, then each condition)."""
    low, high = allowed_bounds(rows)
    offsets = classifier.manifest.tier_offsets
    plain, conditions = route_rows(classifier, rows, library, classifier.manifest.escalation_q, seed)
    wrapped = pooled_wrapped_metrics(plain, conditions, low, high, offsets)
    bare = condition_metrics(plain.probs, plain.chosen, plain.chosen, low, high, offsets)
    return {"bare": bare, "wrapped": wrapped}, np.concatenate(
        [plain.chosen, *(r.chosen for r in conditions.values())]
    )


def study(
    model_dir: Path, lengths: list[int], requests: list[ClassifierInput], rows: int, repeats: int, seed: int
) -> list[dict[str, Any]]:
    splits = read_splits(paths.processed_dir())
    samples = {s: sample_rows(splits[s], rows, seed) for s in QUALITY_SPLITS}
    library = WrapperLibrary.load("eval")
    results: list[dict[str, Any]] = []
    reference: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as work:
        for max_length in lengths:
            classifier = TierClassifier(folder_at_length(model_dir, max_length, Path(work)))
            ids, _ = classifier.encoder.encode_ids(requests)
            times = latency_ms(classifier, requests, repeats)
            row: dict[str, Any] = {
                "max_length": max_length,
                "truncated": float(np.mean([len(i) >= max_length for i in ids])),
                "p50_ms": percentile(times, 50),
                "p99_ms": percentile(times, 99),
                "mean_ms": statistics.fmean(times),
            }
            for split, sample in samples.items():
                metrics, routed = split_quality(classifier, sample, library, seed)
                reference.setdefault(split, routed)  # the first length is the reference
                row[split] = {**metrics, "same_tier_as_first": float(np.mean(routed == reference[split]))}
            results.append(row)
            print(f"max_length {max_length}: done", file=sys.stderr, flush=True)
    return results


def render(model_dir: Path, results: list[dict[str, Any]], n_requests: int, rows: int) -> str:
    def num(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    lines = [
        f"**Sequence length** of `{model_dir}` ({n_requests} bench request bodies for latency and truncation, "
        f"one request per call; quality on {rows} seeded rows per split, bare and under the "
        f"{len(CONDITIONS)} evaluation-only wrapper conditions; same tier: routed tiers equal to those at "
        f"max length {results[0]['max_length']})",
        "",
        "| max length | truncated | p50 ms | p99 ms | mean ms | split | macro-F1 bare / wrapped | flip "
        "| AUC bare / wrapped | same tier |",
        "| ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | --- | ---: |",
    ]
    for r in results:
        for i, split in enumerate(QUALITY_SPLITS):
            m = r[split]
            head = (
                f"| {r['max_length']} | {100 * r['truncated']:.1f}% | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
                f"| {r['mean_ms']:.1f}"
                if i == 0
                else "| | | | |"
            )
            lines.append(
                f"{head} | {split} | {num(m['bare']['macro_f1'])} / {num(m['wrapped']['macro_f1'])} "
                f"| {100 * m['wrapped']['flip_rate']:.1f}% | {num(m['bare']['auc_needs_more_than_fast'])} / "
                f"{num(m['wrapped']['auc_needs_more_than_fast'])} | {100 * m['same_tier_as_first']:.1f}% |"
            )
    return "\n".join(lines) + "\n"


def read_requests(path: Path, limit: int) -> list[ClassifierInput]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `make bench-requests` first.")
    with open(path, encoding="utf-8") as f:
        bodies = [json.loads(line)["body"] for line in f if line.strip()]
    return [request_input(b) for b in bodies[:limit]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=REPO_DIR / "models" / "default")
    parser.add_argument("--lengths", default="256,192,128,96", help="max lengths, the folder's own first")
    parser.add_argument("--requests", type=Path, default=DEFAULT_REQUESTS)
    parser.add_argument("--latency-requests", type=int, default=300, help="bench bodies timed per length")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes over them")
    parser.add_argument("--rows", type=int, default=200, help="seeded rows per quality split")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--output", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    try:
        lengths = [int(x) for x in args.lengths.split(",") if x.strip()]
        requests = read_requests(args.requests, args.latency_requests)
        results = study(args.model, lengths, requests, args.rows, args.repeats, args.seed)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    table = render(args.model, results, len(requests), args.rows)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(table, encoding="utf-8")
        args.output.with_suffix(".json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
