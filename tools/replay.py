"""A simulated deployment: per-segment risk control on a stream of requests whose needs are known.

    make replay                     # 20,000 requests, three runs, tables into runs/replay.md
    python -m tools.replay --requests 4000 --seed 1

Requests are drawn (seeded, with replacement) from the held-out and test splits; each row's source is
its segment. They go through the real service in process (`create_app`: the model, the policy, the
decision log in a fresh SQLite file, the shadow evaluator, the controller), in `/classify/batch` calls.
The shadow judge is the local fake LLM server (tools/fake_llm.py), answering from each row's outcome
labels (the cheapest tier the row allows is what it needs) with `--judge-noise` of its verdicts
flipped; the policy's shadow share is `--shadow-share`, the controller's alpha `--alpha`, and it is
told the judge's error rate (`judge_error_rate`), as an operator who measured their judge would.

Three runs, each on a fresh decision log:
- `named`: the caller sends the source as `route`; the controller on;
- `auto`: no route: the model folder's automatic segments must find the sources; the controller on;
- `off`: routes named, no controller (the static router; the shadow judges as it always did).

After every `--step` requests the replay waits for the decision log and the shadow to finish and
refreshes the controller, so a run is the same for the same seed however fast the machine is. Printed:
a table per 1,000-request window (under-routing overall and in the worst source, cost against
all-top and against the oracle: each request at the cheapest tier that suffices, the tier mix), the
per-source table of the last `--tail` requests against alpha plus the sampling allowance, and, last, one
JSON line for the named run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tierwise.core.policy import Policy
from tierwise.core.policy_file import load_policy
from tierwise.core.scoring import tier_cost_usd
from tierwise.evidence import judge
from tierwise.training import paths

from tools.fake_llm import FakeScript, FakeServer, policy_strengths
from tools.replay_figures import (
    ALLOWANCE_Z,
    MIN_TAIL_REQUESTS,
    Outcome,
    RunResult,
    ceiling,
    headline,
    pct,
    render_run,
)

RUNS = ("named", "auto", "off")


@dataclass(frozen=True)
class Row:
    text: str
    source: str
    needed: int  # index of the cheapest tier the row allows


@dataclass(frozen=True)
class Draw:
    """One replayed request: its row and, with --wrapped, the body an app would send it in."""

    row: Row
    body: dict[str, Any] | None = None  # messages (and tools) holding the row's text; None: bare

    def item(self, route: str | None) -> dict[str, Any]:
        item: dict[str, Any] = {"text": self.row.text} if self.body is None else dict(self.body)
        return {**item, "route": route} if route else item

    def judge_key(self) -> str:
        """The request as the shadow sends it to the judge: its messages, or its text as one user turn."""
        body = self.body if self.body is not None else {"text": self.row.text}
        return judge_key(body.get("messages") or [{"role": "user", "content": body.get("text", "")}])


def judge_key(messages: Sequence[dict[str, Any]]) -> str:
    """How the fake judge finds a request's row: the request as the judge prompt shows it."""
    return hashlib.sha256(judge.conversation_block(messages).strip().encode()).hexdigest()


def draw_requests(rows: Sequence[Row], args: argparse.Namespace) -> list[Draw]:
    """`--requests` rows drawn with replacement (seeded); with --wrapped each inside an evaluation-only
    wrapper (tierwise.training.wrappers, the eval library: system prompts, tools, RAG, history...)."""
    rng = np.random.default_rng(args.seed)
    picked = [rows[i] for i in rng.integers(0, len(rows), size=args.requests)]
    if not args.wrapped:
        return [Draw(row) for row in picked]
    from tierwise.training.wrappers import CONDITIONS, WrapperLibrary

    library = WrapperLibrary.load("eval")
    wrap_rng = random.Random(args.seed)
    return [Draw(row, library.wrap(row.text, wrap_rng.choice(CONDITIONS), wrap_rng)) for row in picked]


def read_rows(splits: Sequence[str], tier_names: Sequence[str]) -> list[Row]:
    rows = []
    for split in splits:
        path = paths.processed_dir() / f"{split}.jsonl"
        if not path.exists():
            raise SystemExit(f"{path} is missing: run `make data` first")
        for line in path.read_text(encoding="utf-8").splitlines():
            raw = json.loads(line)
            allowed = raw.get("allowed_tiers") or [raw["tier"]]
            needed = min(list(tier_names).index(t) for t in allowed)
            rows.append(Row(raw["text"], raw["source"], needed))
    return rows


def flips(seed: int, noise: float) -> Any:
    """A deterministic judge-noise draw per (request, candidate strength)."""

    def flip(request: str, strength: int) -> bool:
        digest = hashlib.sha256(f"{seed}:{strength}:{request.strip()}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < noise

    return flip


def write_policy(base: Path, out: Path, run: str, args: argparse.Namespace, judge_url: str) -> Path:
    """The packaged policy without its example route overrides, with the shadow and (named/auto) the
    controller."""
    raw = yaml.safe_load(base.read_text(encoding="utf-8"))
    raw.pop("routes", None)
    policy = load_policy(base)
    raw["shadow"] = {
        "share": args.shadow_share,
        "judge_model": policy.tiers[-1].models[0],
        "base_url": judge_url,
        "max_usd_per_hour": 1e6,  # the replay counts its judged requests instead
        "queue_size": 100000,
        "concurrency": 8,
        "timeout_seconds": 30,
    }
    if run != "off":
        raw["segment_control"] = {
            "max_under_routing": args.alpha,
            "judge_error_rate": args.judge_noise,
            "refresh_seconds": 0,  # refreshed by the replay after every step
            "window_hours": 24 * 365,
        }
        if args.explore_boost is not None:
            raw["segment_control"]["explore_boost"] = args.explore_boost
    out.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return out


def run_once(
    run: str, draws: list[Draw], policy: Policy, args: argparse.Namespace, server: FakeServer, folder: Path
) -> RunResult:
    from fastapi.testclient import TestClient
    from tierwise.service.app import create_app
    from tierwise.service.settings import Settings

    policy_file = write_policy(paths.policy_file(), folder / f"policy-{run}.yaml", run, args, server.base_url)
    settings = Settings(
        model_dir=args.model_dir,
        policy_file=policy_file,
        record_decisions=True,
        decision_db=f"sqlite:///{folder / f'decisions-{run}.sqlite'}",
        deadline_ms=60000.0,  # the encoder decides every request: the replay is about the controller
        score_cache_size=len(draws),
        log_level="warning",
    )
    result = RunResult(run)
    tiers = policy.tier_names
    started = time.perf_counter()
    with TestClient(create_app(settings)) as client:
        state = client.app.state  # type: ignore[attr-defined]
        recorder, shadow, controller = state.decision_recorder, state.shadow, state.segment_control
        for start in range(0, len(draws), args.step):
            chunk = draws[start : start + args.step]
            items = [d.item(d.row.source if run != "auto" else None) for d in chunk]
            response = client.post(
                "/classify/batch", json={"items": items}, headers={"X-Request-ID": f"{run}-{start:06d}"}
            )
            response.raise_for_status()
            for draw, answer in zip(chunk, response.json()["results"], strict=True):
                row = draw.row
                tokens = max(1, len(row.text) // 4)  # the same estimate in every run
                routed = tiers.index(answer["tier"]) if answer["tier"] in tiers else -1
                result.segments_seen[answer.get("segment") or "-"] += 1
                result.outcomes.append(
                    Outcome(
                        source=row.source,
                        tier=answer["tier"],
                        needed=row.needed,
                        routed=routed,
                        cost=tier_cost_usd(policy, answer["tier"], tokens),
                        frontier_cost=tier_cost_usd(policy, tiers[-1], tokens),
                        oracle_cost=tier_cost_usd(policy, tiers[row.needed], tokens),
                        reasons=list(answer["reasons"]),
                        tokens=tokens,
                        probabilities=tuple(float(answer["probabilities"].get(t, 0.0)) for t in tiers),
                    )
                )
            recorder.wait_idle(60)
            if shadow is not None:
                shadow.wait_idle(300)
            if controller is not None:
                controller.refresh()
        if controller is not None:
            result.states = [
                {
                    "segment": s.segment,
                    "status": s.status,
                    "setting": s.setting.label(),
                    "judged": s.judged,
                    "estimate": s.estimate,
                    "bound": s.bound,
                }
                for s in sorted(controller.states.values(), key=lambda s: -s.judged)
            ]
        if shadow is not None:
            result.shadow_counts = dict(shadow.counts)
            result.judged = shadow.counts.get("judged", 0)
    result.seconds = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--shadow-share", type=float, default=0.05)
    parser.add_argument("--judge-noise", type=float, default=0.10)
    parser.add_argument(
        "--explore-boost",
        type=float,
        default=None,
        help="the controller's explore_boost (default: the policy's default)",
    )
    parser.add_argument("--step", type=int, default=100, help="requests between controller refreshes")
    parser.add_argument("--tail", type=int, default=5000, help="the last requests the targets are read on")
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated, of: " + ", ".join(RUNS))
    parser.add_argument("--splits", default="heldout,test")
    parser.add_argument(
        "--wrapped", action="store_true", help="send each request inside an evaluation-only app wrapper"
    )
    parser.add_argument("--model-dir", type=Path, default=paths.models_dir() / "default")
    parser.add_argument("--out", type=Path, default=paths.runs_dir() / "replay.md")
    args = parser.parse_args(argv)
    runs = [r for r in args.runs.split(",") if r]
    unknown = sorted(set(runs) - set(RUNS))
    if unknown:
        parser.error(f"--runs: unknown run(s) {unknown}; use of {list(RUNS)}")

    policy = load_policy(paths.policy_file())
    tiers = policy.tier_names
    rows = read_rows(args.splits.split(","), tiers)
    draws = draw_requests(rows, args)
    needs = {d.judge_key(): d.row.needed for d in draws}
    missed: list[str] = []  # judge prompts the replay could not find the row of (then: the top is needed)

    def needed(text: str) -> int:
        found = needs.get(hashlib.sha256(text.strip().encode()).hexdigest())
        if found is None:
            missed.append(text[:80])
        return len(tiers) - 1 if found is None else found

    script = FakeScript(
        strengths=policy_strengths(paths.policy_file()),
        needs=needed,
        verdict_flip=flips(args.seed, args.judge_noise),
    )
    print(
        f"replay: {args.requests} requests from {args.splits} ({len(rows)} rows, "
        f"{len({r.source for r in rows})} sources), seed {args.seed}, alpha {args.alpha}, shadow share "
        f"{args.shadow_share}, judge noise {args.judge_noise}, runs {runs}",
        file=sys.stderr,
    )
    results: dict[str, RunResult] = {}
    server = FakeServer(script).start()
    try:
        with tempfile.TemporaryDirectory(prefix="tierwise-replay-") as tmp:
            for run in runs:
                results[run] = run_once(run, draws, policy, args, server, Path(tmp))
                print(f"replay: run {run} done in {results[run].seconds:.0f} s", file=sys.stderr)
    finally:
        server.stop()

    if missed:
        print(
            f"replay: the judge could not place {len(missed)} requests, e.g. {missed[0]!r}", file=sys.stderr
        )
    tail = min(args.tail, args.requests)
    lines = [
        "# Replay: per-segment risk control on a simulated deployment",
        "",
        f"`python -m tools.replay --requests {args.requests} --seed {args.seed} --alpha {args.alpha} "
        f"--shadow-share {args.shadow_share} --judge-noise {args.judge_noise}"
        f"{' --wrapped' if args.wrapped else ''}`; model `{args.model_dir.name}`; "
        f"{len(rows)} rows of {args.splits}, {len({r.source for r in rows})} sources, drawn with replacement. "
        f"Targets read on the last {tail} requests: every source with >= {MIN_TAIL_REQUESTS} of them at or "
        f"under alpha + {ALLOWANCE_Z} * sqrt(alpha (1 - alpha) / n).",
        "",
    ]
    for run in runs:
        lines += render_run(results[run], tiers, args.alpha, tail)
    heads = {run: headline(results[run], tiers, args.alpha, tail) for run in runs}
    if "named" in results:
        best = ceiling(results["named"], policy, args.model_dir, args.alpha, tail)
        heads["ceiling"] = best
        lines += [
            "## The ceiling of this model",
            "",
            "Per source, the cheapest setting of the controller's path (or the model's own rule) whose true "
            f"under-routing over the named run is <= alpha, chosen knowing every label: on the last {tail} "
            f"requests it saves {pct(best['savings_share_of_oracle'])} of what the oracle saves (cost "
            f"{pct(best['cost_vs_frontier'])} of all-top). No setting of the controller's path does better at "
            "this alpha, even chosen knowing every label; the gap to it is what noisy, sampled evidence costs.",
            "",
        ]
    lines += ["## Headline (last requests)", "", "```json", json.dumps(heads, indent=2), "```", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    first = "named" if "named" in heads else runs[0]
    final = {
        "run": first,
        **heads[first],
        "alpha": args.alpha,
        "requests": args.requests,
        "others": {name: head for name, head in heads.items() if name != first},
    }
    print(json.dumps(final))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
