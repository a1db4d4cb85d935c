"""`make bench` (capacity part): how much traffic a model folder *classifies*, and how every answer
was decided when there is more.

    python -m tools.capacity_bench --model models/default --compare models/previous
    python -m tools.capacity_bench --rates 25,50,100,200 --clients 1,8,32,64 --duration 15

Each model folder is served by the real service (`python -m tierwise.service`, micro-batching on; `--workers`
and `--onnx-threads` set its processes and onnxruntime threads)
and driven with the request bodies of `make bench-requests` (test rows, half bare and half wrapped
by the evaluation-only wrappers): closed-loop (N clients, each waiting for its answer) and
open-loop (a fixed arrival rate that does not slow down when the router does, as gateways do not;
latency counts from the scheduled send). Per level: req/s, p50/p99, errors, the share of answers
decided by the `encoder`, the `estimator` and the blind `fallback` (from each response's
`decided_by`), the routed tier mix, and its cost against the unloaded decisions on the same bodies:
before the levels, every body is sent once, one at a time, and its routed tier kept; a level's
answers are priced (tier prices from the policy, the same blended request size at every tier) over
the unloaded tiers of exactly the bodies it answered, so 1.00 = routes as an unloaded service does.

**Classified capacity**: the highest open-loop rate at which >= 99% of answers come from the
encoder, p99 is under the deadline and nothing failed; per core = that / the machine's cores. The
load generator shares the machine's cores with the server, as the rest of `make bench` does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tierwise.core.policy import DECIDED_BY, Policy
from tierwise.core.policy_file import load_policy
from tierwise.core.scoring import request_cost_usd
from tierwise.service.settings import get_settings

from tools.harness import REPO_DIR, percentile, raw_request, served_service, tree_rss_kib
from tools.load_levels import Level, closed_loop, open_loop, read_request_bodies, unloaded_pass

DEFAULT_REQUESTS = REPO_DIR / "data" / "processed" / "bench_requests.jsonl"
ENCODER_SHARE_FOR_CAPACITY = 0.99
BLENDED_PROMPT_TOKENS = 500  # for the cost vs unloaded: the same request size at every tier


# -- one served model folder -------------------------------------------------------------------------


@dataclass
class FolderRun:
    name: str
    deadline_ms: float
    closed: list[Level]
    open: list[Level]
    rss_mib: float
    unloaded: Level | None = None  # every body once, one at a time

    def unloaded_tiers(self) -> dict[int, str]:
        """Body index -> the tier the encoder routed it to in the unloaded pass."""
        if self.unloaded is None:
            return {}
        return {index: tier for index, decided_by, tier in self.unloaded.routed if decided_by == "encoder"}

    def classified_capacity(self) -> float:
        """The highest open-loop rate with >= 99% encoder answers, p99 under the deadline, no errors."""
        held = [
            level.load
            for level in self.open
            if level.errors == 0
            and level.share("encoder") >= ENCODER_SHARE_FOR_CAPACITY
            and percentile(level.latencies_ms, 99) < self.deadline_ms
        ]
        return max(held, default=0.0)


def serve_and_drive(
    model_dir: Path,
    bodies: list[bytes],
    clients: Sequence[int],
    rates: Sequence[float],
    seconds: float,
    deadline_ms: float,
    extra_env: dict[str, str],
    name: str | None = None,
) -> FolderRun:
    """`model_dir` served (micro-batching on, the caller's TIERWISE_* settings, then `extra_env`'s
    TIERWISE_* variables), warmed up, then driven closed-loop at each of `clients` and open-loop at
    each of `rates` for `seconds`."""
    settings: dict[str, object] = {
        "workers": 1,
        "onnx_threads": 0,
        "record_decisions": "false",
        # The load cycles over a fixed set of bodies: a score cache would measure the cache, not the
        # encoder. Production repetition is real but workload-specific; --score-cache turns it on.
        "score_cache_size": 0,
        **{key.removeprefix("TIERWISE_").lower(): value for key, value in extra_env.items()},
    }
    name = name or model_dir.name
    with (
        tempfile.TemporaryDirectory(prefix="tierwise-capacity-") as log_dir,
        served_service(model_dir, Path(log_dir) / "server.log", inherit_settings=True, **settings) as server,
    ):
        requests = [raw_request(server.port, "/classify", body) for body in bodies]
        asyncio.run(closed_loop(server.port, requests, 4, 2.0))  # warm-up, not measured
        unloaded = asyncio.run(unloaded_pass(server.port, requests))
        closed = [drive_level(name, closed_loop(server.port, requests, c, seconds)) for c in clients]
        opened = [drive_level(name, open_loop(server.port, requests, r, seconds)) for r in rates]
        return FolderRun(name, deadline_ms, closed, opened, tree_rss_kib(server.pid) / 1024, unloaded)


def drive_level(name: str, load: object) -> Level:
    level = asyncio.run(load)  # type: ignore[arg-type]
    print(
        f"  {name}: {level.mode} {level.load:g}: {level.rate:.0f} req/s, p99 "
        f"{percentile(level.latencies_ms, 99):.0f} ms, encoder {100 * level.share('encoder'):.1f}%, "
        f"errors {level.describe_errors()}",
        file=sys.stderr,
    )
    time.sleep(1.0)  # let the queue drain between levels
    return level


# -- the table ---------------------------------------------------------------------------------------


def tier_prices(policy: Policy, output_tokens: int) -> dict[str, float]:
    """USD per request at each tier (the private one too) for the same blended request."""
    tiers = [*policy.tiers, *([policy.private_tier] if policy.private_tier is not None else [])]
    return {
        t.name: request_cost_usd(
            BLENDED_PROMPT_TOKENS, output_tokens, t.input_price_per_million, t.output_price_per_million
        )
        for t in tiers
    }


def cost_vs_unloaded(level: Level, unloaded_tiers: dict[int, str], prices: dict[str, float]) -> float:
    """The level's routed tiers priced over the unloaded tiers of the same bodies (those the unloaded
    pass had an encoder decision for); nan when there are none."""
    pairs = [(tier, unloaded_tiers[i]) for i, _, tier in level.routed if i in unloaded_tiers]
    base = sum(prices.get(unloaded, 0.0) for _, unloaded in pairs)
    return sum(prices.get(tier, 0.0) for tier, _ in pairs) / base if base else float("nan")


def level_rows(run: FolderRun, levels: list[Level], prices: dict[str, float]) -> list[str]:
    unloaded_tiers = run.unloaded_tiers()
    rows = []
    for level in levels:
        load = f"{level.load:g} clients" if level.mode == "closed" else f"{level.load:g} req/s offered"
        shares = " / ".join(f"{100 * level.share(d):.1f}%" for d in DECIDED_BY)
        total = sum(level.tiers.values()) or 1
        mix = " / ".join(f"{100 * level.tiers[t] / total:.0f}%" for t in ("fast", "balanced", "frontier"))
        cost = cost_vs_unloaded(level, unloaded_tiers, prices)
        rows.append(
            f"| {run.name} | {load} | {level.rate:.0f} | {percentile(level.latencies_ms, 50):.1f} | "
            f"{percentile(level.latencies_ms, 99):.1f} | {level.describe_errors()} | {shares} | {mix} | "
            f"{cost:.2f} |"
        )
    return rows


def markdown_report(runs: list[FolderRun], prices: dict[str, float], seconds: float, note: str) -> str:
    cores = os.cpu_count() or 1
    lines = [
        f"**Classified capacity** ({note}; {seconds:g} s per level; {cores} CPU cores shared with the load "
        "generator; micro-batching on)",
        "",
        "| server | load | answered req/s | p50 ms | p99 ms | errors | encoder / estimator / fallback | "
        "mix f/b/F | cost vs unloaded |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- | ---: |",
    ]
    for run in runs:
        lines += level_rows(run, run.closed, prices)
        lines += level_rows(run, run.open, prices)
    lines += [
        "",
        "| server | deadline ms | classified capacity req/s | per core | RSS MiB (all processes) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        capacity = run.classified_capacity()
        lines.append(
            f"| {run.name} | {run.deadline_ms:g} | {capacity:g} | {capacity / cores:.1f} | {run.rss_mib:.0f} |"
        )
    lines += [
        "",
        "Classified capacity: the highest offered rate (of those run) with >= 99% of answers from the encoder, "
        "p99 under the deadline and no errors; 0 when even the lowest rate missed it. Relative cost: the "
        "level's routed tiers priced per request, over the tiers the same server gave the same bodies in an "
        "unloaded pass (every body once, one at a time; only bodies the encoder decided there count).",
    ]
    for run in runs:
        if run.unloaded is not None:
            lines.append(
                f"Unloaded pass, {run.name}: {run.unloaded.answered} bodies, "
                f"{100 * run.unloaded.share('encoder'):.1f}% decided by the encoder, "
                f"p50 {percentile(run.unloaded.latencies_ms, 50):.1f} ms, errors {run.unloaded.describe_errors()}."
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    settings = get_settings()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=settings.model_dir, help="model folder to serve")
    parser.add_argument("--compare", type=Path, action="append", default=[], help="another folder, same run")
    parser.add_argument("--requests", type=Path, default=DEFAULT_REQUESTS, help="from `make bench-requests`")
    parser.add_argument("--clients", default="1,8,32,64", help="closed-loop client counts")
    parser.add_argument("--rates", default="25,50,75,100,125,150,200,300", help="open-loop offered req/s")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    parser.add_argument("--policy", type=Path, default=settings.policy_file)
    parser.add_argument(
        "--without-estimator",
        action="store_true",
        help="also serve --model with TIERWISE_ESTIMATOR=false (plain fail-upward under load), same run",
    )
    parser.add_argument("--workers", type=int, default=1, help="service worker processes (TIERWISE_WORKERS)")
    parser.add_argument(
        "--onnx-threads", type=int, default=0, help="onnxruntime intra-op threads per worker (0 = all cores)"
    )
    parser.add_argument(
        "--score-cache", action="store_true", help="keep the service's score cache on (off: bodies repeat)"
    )
    parser.add_argument("--output", type=Path, help="also write the markdown table to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        bodies = read_request_bodies(args.requests)
        policy = load_policy(args.policy)
        clients = [int(c) for c in args.clients.split(",") if c.strip()]
        rates = [float(r) for r in args.rates.split(",") if r.strip()]
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    deadline_ms = get_settings().deadline_ms or policy.deadline_ms
    env = {
        "TIERWISE_POLICY_FILE": str(args.policy),
        "TIERWISE_WORKERS": str(args.workers),
        "TIERWISE_ONNX_THREADS": str(args.onnx_threads),
    }
    if args.score_cache:
        env["TIERWISE_SCORE_CACHE_SIZE"] = str(get_settings().score_cache_size)
    runs = []
    for folder in (args.model, *args.compare):
        print(f"capacity: {folder} ...", file=sys.stderr)
        runs.append(serve_and_drive(Path(folder), bodies, clients, rates, args.duration, deadline_ms, env))
    if args.without_estimator:
        print(f"capacity: {args.model} without its estimator ...", file=sys.stderr)
        off = {**env, "TIERWISE_ESTIMATOR": "false"}
        name = f"{Path(args.model).name}, estimator off"
        runs.append(
            serve_and_drive(Path(args.model), bodies, clients, rates, args.duration, deadline_ms, off, name)
        )
    cache = "on" if args.score_cache else "off"
    note = (
        f"{len(bodies)} request bodies from {args.requests.name}, half wrapped; {args.workers} worker(s), "
        f"onnxruntime threads {args.onnx_threads or 'all'}; score cache {cache}"
    )
    report = markdown_report(runs, tier_prices(policy, policy.expected_output_tokens), args.duration, note)
    print(report)
    if args.output:
        args.output.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
