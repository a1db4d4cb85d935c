"""Batch invariance and its cost: the classifier's one-row-per-call scoring against padded batches.

    python -m tools.batch_invariance --model models/default --rows 1000

Both ways run in one process on the same onnxruntime session, interleaved call by call so machine
load falls on both alike:
- `padded batch`: what the classifier did before issue 22 (rows sorted by length, padded to the
  longest, one onnxruntime call per chunk of at most 4,096 tokens);
- `row by row`: what `TierClassifier.logits` does now (one unpadded call per row).
Tables:
1. the largest |P difference| and the tier flips of `--rows` varied texts (1 to 300 words) scored
   in seeded random batches of 2 to `--batch` rows, against each text scored alone;
2. one request per call (in-process, no HTTP) at 16 and 64 tokens, p50 / p99;
3. one micro-batcher call (`predict_proba` on `--batch` rows: the service's micro_batch_max_size)
   at 16 tokens, 64 tokens and mixed lengths, p50 / p99 and rows per second.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tierwise.core.classifier import TierClassifier, softmax
from tierwise.core.escalation import route_upward

from tools.bench.prompts import DEFAULT_PROMPTS, prompt_of_tokens, read_prompts
from tools.harness import REPO_DIR, percentile

OLD_MAX_BATCH_TOKENS = 4096  # the removed TierClassifier default
Logits = Callable[[Sequence[str]], np.ndarray]  # texts -> raw logits (N, K)


def padded_batch_logits(classifier: TierClassifier, texts: Sequence[str]) -> np.ndarray:
    """The scoring before issue 22: length-sorted chunks of rows padded to their longest. -> (N, K)"""
    rows, _ = classifier.encoder.encode_ids(texts)
    out = np.zeros((len(rows), len(classifier.tiers)), dtype=np.float64)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end + 1 - start) * len(rows[order[end]]) <= OLD_MAX_BATCH_TOKENS:
            end += 1
        chunk = order[start:end]
        input_ids, attention_mask = classifier.encoder.pad([rows[i] for i in chunk])
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in {i.name for i in classifier.session.get_inputs()}:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        (out[chunk],) = classifier.session.run(["logits"], feeds)
        start = end
    return out


def scorers(classifier: TierClassifier) -> dict[str, Logits]:
    return {
        "padded batch (before)": lambda texts: padded_batch_logits(classifier, texts),
        "row by row (after)": lambda texts: classifier.logits(texts)[0],
    }


def varied_texts(pool: Sequence[str], n: int, seed: int) -> list[str]:
    """`n` runs of 1 to 300 words (log-uniform: short prompts dominate) cut from `pool` and README.md."""
    words = " ".join([*pool, (REPO_DIR / "README.md").read_text(encoding="utf-8")]).split()
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = min(len(words), round(math.exp(rng.uniform(0.0, math.log(300)))))
        start = rng.randrange(len(words) - length + 1)
        out.append(" ".join(words[start : start + length]))
    return out


def invariance_rows(
    classifier: TierClassifier, texts: list[str], max_batch: int, seed: int
) -> list[tuple[str, float, int]]:
    """Per scorer: (name, max |P in a random batch - P alone|, rows whose routed tier changed)."""
    q, offsets, temperature = (
        classifier.manifest.escalation_q,
        classifier.manifest.tier_offsets,
        classifier.manifest.temperature,
    )
    out = []
    for name, logits_of in scorers(classifier).items():
        alone = softmax(np.concatenate([logits_of([t]) for t in texts]) / temperature)
        batched = np.zeros_like(alone)
        order = list(range(len(texts)))
        random.Random(seed).shuffle(order)
        rng = random.Random(seed + 1)
        while order:
            size = rng.randint(2, max_batch)
            batch, order = order[:size], order[size:]
            batched[batch] = softmax(logits_of([texts[i] for i in batch]) / temperature)
        flips = int(np.sum(route_upward(alone, q, offsets) != route_upward(batched, q, offsets)))
        out.append((name, float(np.max(np.abs(batched - alone))), flips))
    return out


def interleaved_ms(calls: dict[str, Callable[[], object]], iterations: int) -> dict[str, list[float]]:
    """Milliseconds per call of each entry, called in turn `iterations` times after a warm-up."""
    for call in calls.values():
        for _ in range(max(3, iterations // 10)):
            call()
    timings: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(iterations):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            timings[name].append((time.perf_counter() - started) * 1000.0)
    return timings


def bind(logits_of: Logits, texts: list[str]) -> Callable[[], object]:
    return lambda: logits_of(texts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.batch_invariance",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", type=Path, default=REPO_DIR / "models" / "default")
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS, help="JSONL with a `text` field")
    parser.add_argument("--rows", type=int, default=1000, help="texts for the invariance table")
    parser.add_argument("--batch", type=int, default=32, help="largest batch (the micro-batcher's)")
    parser.add_argument("--iterations", type=int, default=500, help="timed calls per single-request row")
    parser.add_argument("--batch-iterations", type=int, default=40, help="timed calls per batch row")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = all)")
    parser.add_argument("--seed", type=int, default=22)
    args = parser.parse_args(argv)

    classifier = TierClassifier(args.model, intra_op_threads=args.threads)
    pool, pool_note = read_prompts(args.prompts)
    texts = varied_texts(pool, args.rows, args.seed)
    lengths = [len(ids) for ids in classifier.encoder.encode_ids(texts)[0]]
    print(f"model {args.model}; words from {pool_note} + README.md; threads {args.threads or 'all'}")
    spread = f"{min(lengths)}-{max(lengths)} tokens (median {int(np.median(lengths))})"
    print(f"\n{args.rows} texts of {spread} in random batches of 2-{args.batch}, against each alone\n")
    print("| scoring | max abs P difference | routed tier changed |")
    print("|---|---:|---:|")
    for name, diff, flips in invariance_rows(classifier, texts, args.batch, args.seed):
        print(f"| {name} | {diff:.2e} | {flips} of {len(texts)} |")

    rng = random.Random(args.seed)

    def batch_of(tokens: int) -> list[str]:
        return [
            prompt_of_tokens(classifier.encoder, rng.sample(pool, len(pool)), tokens)
            for _ in range(args.batch)
        ]

    shapes = {
        "1 request, 16 tokens": ([prompt_of_tokens(classifier.encoder, pool, 16)], args.iterations),
        "1 request, 64 tokens": ([prompt_of_tokens(classifier.encoder, pool, 64)], args.iterations),
        f"{args.batch} requests, 16 tokens": (batch_of(16), args.batch_iterations),
        f"{args.batch} requests, 64 tokens": (batch_of(64), args.batch_iterations),
        f"{args.batch} requests, mixed lengths": (
            rng.sample(texts, min(args.batch, len(texts))),
            args.batch_iterations,
        ),
    }
    print("\nms per call (calls interleaved)\n")
    print("| call | scoring | p50 ms | p99 ms | requests/s at p50 |")
    print("|---|---|---:|---:|---:|")
    for shape, (shape_texts, iterations) in shapes.items():
        calls = {name: bind(logits_of, shape_texts) for name, logits_of in scorers(classifier).items()}
        for name, timings in interleaved_ms(calls, iterations).items():
            p50 = percentile(timings, 50)
            print(
                f"| {shape} | {name} | {p50:.1f} | {percentile(timings, 99):.1f} "
                f"| {len(shape_texts) * 1000.0 / p50:.0f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
