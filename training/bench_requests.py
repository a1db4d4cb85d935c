"""The request bodies `make bench` sends: held-out-from-training rows as gateways send them.

    python -m tierwise.training.bench_requests              # writes data/processed/bench_requests.jsonl

A seeded sample of the test split (rows never trained on), each row twice: bare (its `text`, or its
`messages` when it came as a conversation) and wrapped by an evaluation-only wrapper
(`data/wrappers/eval.yaml`, the conditions taken in turn), so the load has the long system prompts,
tool definitions and histories real apps send. Each line: {"body": <POST /classify body>,
"shape": "bare" | "wrapped:<condition>", "lowest_tier": <cheapest sufficient tier>}. Processed data:
rebuilt by this command, never edited.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

from tierwise.training import paths
from tierwise.training.invariance import sample_rows
from tierwise.training.labels import lowest_tier
from tierwise.training.wrappers import CONDITIONS, WrapperLibrary

BENCH_REQUESTS_FILE = "bench_requests.jsonl"


def bare_body(row: dict) -> dict[str, Any]:
    if row.get("messages") is not None:
        body: dict[str, Any] = {"messages": row["messages"]}
        if row.get("tools"):
            body["tools"] = row["tools"]
        return body
    return {"text": row["text"]}


def bench_requests(test_rows: list[dict], rows: int, seed: int) -> list[dict[str, Any]]:
    library = WrapperLibrary.load("eval")
    out = []
    for index, row in enumerate(sample_rows(test_rows, rows, seed)):
        condition = CONDITIONS[index % len(CONDITIONS)]
        wrapped = library.wrap(row["text"], condition, random.Random(f"{seed}:{condition}:{row['id']}"))
        lowest = lowest_tier(row["allowed_tiers"])
        out.append({"body": bare_body(row), "shape": "bare", "lowest_tier": lowest})
        out.append({"body": wrapped, "shape": f"wrapped:{condition}", "lowest_tier": lowest})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="splits from `make data`")
    parser.add_argument(
        "--rows", type=int, default=1000, help="test rows sampled (each sent bare and wrapped)"
    )
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--output", type=Path, default=None, help=f"default <data-dir>/{BENCH_REQUESTS_FILE}")
    args = parser.parse_args(argv)
    data_dir = args.data_dir or paths.processed_dir()
    test_file = data_dir / "test.jsonl"
    if not test_file.is_file():
        print(f"error: {test_file} is missing: run `make data` first (or pass --data-dir).", file=sys.stderr)
        return 2
    with open(test_file, encoding="utf-8") as f:
        test_rows = [json.loads(line) for line in f if line.strip()]
    requests = bench_requests(test_rows, args.rows, args.seed)
    output = args.output or data_dir / BENCH_REQUESTS_FILE
    output.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in requests), encoding="utf-8")
    print(
        f"wrote {len(requests)} request bodies ({len(requests) // 2} bare, {len(requests) // 2} wrapped) to {output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
