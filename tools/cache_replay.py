"""`make cache-replay`: the score cache's hit rate on a replay of the bench's requests with repetition.

    python -m tools.cache_replay --output runs/cache_replay.md
    python -m tools.cache_replay --repeat-shares 0,0.3 --sizes 256,1024

Production traffic repeats itself (retries, templated requests, agents asking the same thing in a
loop), but how much is a property of each deployment: no public figure is assumed here, the repeat
share r is a parameter. The replay sends every one of the bench's request bodies once, in a seeded
order (`make bench-requests`: test rows, half bare and half wrapped by the evaluation-only wrappers),
with repeats in between: each request is, with probability r, a repeat of a request drawn uniformly
from everything sent so far (so popular requests get more popular, as retries of retried requests
and agent loops do: a Yule-Simon process), otherwise the next new body. The stream runs through the
service's own `ScoreCache` (same key: a hash of exactly what the classifier reads; same LRU bound)
for each cache size. Per (r, size): the hit rate, i.e. the share of requests the encoder does not
score (at most r: a new body is always a miss), and the cache's own cost per request (key hashing,
lookup and store).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tierwise.core.request_text import ClassifierInput, request_input
from tierwise.service.batcher import Score
from tierwise.service.score_cache import ScoreCache
from tierwise.service.settings import Settings

from tools.harness import REPO_DIR

DEFAULT_REQUESTS = REPO_DIR / "data" / "processed" / "bench_requests.jsonl"
PLACEHOLDER_SCORE = Score(np.array([1.0, 0.0, 0.0]), 1)  # the replay measures hits, not scores


def repeat_stream(n_bodies: int, repeat_share: float, seed: int) -> np.ndarray:
    """Body indices: every body once (seeded order) and, before each next one, repeats of earlier
    requests with probability `repeat_share` each, drawn uniformly from the requests sent so far."""
    if not 0.0 <= repeat_share < 1.0:
        raise ValueError(f"the repeat share must be in [0, 1), got {repeat_share}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_bodies)
    sent: list[int] = []
    next_new = 0
    while next_new < n_bodies:
        if sent and rng.random() < repeat_share:
            sent.append(sent[int(rng.integers(len(sent)))])
        else:
            sent.append(int(order[next_new]))
            next_new += 1
    return np.array(sent)


def replay(bodies: list[ClassifierInput], stream: np.ndarray, size: int) -> dict[str, Any]:
    cache = ScoreCache(size)
    hits = 0
    started = time.perf_counter()
    for index in stream:
        item = [bodies[index]]
        if cache.lookup(item)[0] is not None:
            hits += 1
        else:
            cache.store(item, [PLACEHOLDER_SCORE])
    seconds = time.perf_counter() - started
    return {
        "cache_size": size,
        "requests": len(stream),
        "distinct": len(set(stream.tolist())),
        "hit_rate": hits / len(stream) if len(stream) else 0.0,
        "us_per_request": 1e6 * seconds / max(len(stream), 1),
    }


def run(bodies: list[ClassifierInput], shares: list[float], sizes: list[int], seed: int) -> list[dict]:
    results = []
    for share in shares:
        stream = repeat_stream(len(bodies), share, seed)
        results += [{"repeat_share": share, **replay(bodies, stream, size)} for size in sizes]
    return results


def render(results: list[dict[str, Any]], n_bodies: int) -> str:
    lines = [
        f"**Score cache replay** ({n_bodies} distinct bench request bodies, each sent once, with a share r of "
        "repeats of earlier requests in between; the service's ScoreCache, LRU)",
        "",
        "| repeat share r | cache size | requests | distinct | hit rate | cache cost µs / request |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {100 * r['repeat_share']:.0f}% | {r['cache_size']} | {r['requests']} | {r['distinct']} | "
        f"{100 * r['hit_rate']:.1f}% | {r['us_per_request']:.1f} |"
        for r in results
    ]
    return "\n".join(lines) + "\n"


def read_bodies(path: Path) -> list[ClassifierInput]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `make bench-requests` first.")
    with open(path, encoding="utf-8") as f:
        return [request_input(json.loads(line)["body"]) for line in f if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--requests", type=Path, default=DEFAULT_REQUESTS, help="bench request bodies (JSONL)"
    )
    parser.add_argument(
        "--repeat-shares", default="0,0.1,0.3,0.5", help="shares of requests that are repeats"
    )
    parser.add_argument("--sizes", default=None, help="cache sizes (default: 256 and the service's setting)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--output", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    try:
        bodies = read_bodies(args.requests)
        shares = [float(x) for x in args.repeat_shares.split(",") if x.strip()]
        default_size = Settings().score_cache_size
        sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else sorted({256, default_size})
        if not bodies:
            raise ValueError(f"{args.requests} holds no request bodies")
        results = run(bodies, shares, sizes, args.seed)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    table = render(results, len(bodies))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
