"""The cascade with real parts: 1,000 mixed requests through the LiteLLM proxy, cascade off and on.

    python -m tools.cascade_bench [--requests 1000] [--seed 0] [--concurrency 8] [--output runs/cascade.md]

(`make cascade`.) The stack is tools/cascade_stack.py: the real `litellm --config` with the config and
the `cascade:` block documented in serving/tierwise/gateway/LITELLM.md, a tierwise service (the tiny
test model, decision log on) and the scripted upstream of tools/cascade_fake.py, whose fast deployment
(gpt-4o-mini) returns malformed JSON for 20% of the requests asking for JSON or tools, truncates 5%
and refuses 3% of all its answers; the stronger ones answer well. The requests (a seeded mix of plain,
JSON-object, JSON-schema, tool, private and streamed requests, routed to every tier) go through twice:
with `metadata: {"tierwise_cascade": false}` (off), then as they are (on).

An answer succeeds when the answer the client receives passes the cascade's own checks (a stream's
chunks are joined first). Cost is every upstream call's tokens at the policy's price of the model's
tier, failed answers and retries included; the all-frontier baseline sends every public request to
the top tier (and private ones to the private tier), where the fake never fails. The added latency is
the gateway's `x-tierwise-cascade-added-ms` (checks plus retries) of non-streamed requests. The last
line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tools.cascade_fake import CascadeUpstream, Faults, _usage, answer_message, stream_response
from tools.harness import percentile

FAST_FAULTS = Faults(malformed=0.20, truncate=0.05, refuse=0.03)
WORDS = {
    "fast": ["hi", "hello", "thanks", "yes", "ok"],
    "balanced": ["summarize", "write", "email", "explain", "list"],
    "frontier": ["prove", "theorem", "optimize", "design", "distributed"],
}
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
}
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}
PRIVATE_SUFFIXES = ["jane.doe@example.com", "card 4111 1111 1111 1111", "IBAN DE89 3704 0044 0532 0130 00"]
# (kind, routed tier, share of the mix)
MIX = [
    ("plain", "fast", 0.33),
    ("json_object", "fast", 0.15),
    ("json_schema", "fast", 0.10),
    ("tools", "fast", 0.10),
    ("plain", "balanced", 0.07),
    ("json_object", "balanced", 0.04),
    ("plain", "frontier", 0.05),
    ("private_json", "fast", 0.05),
    ("private_plain", "fast", 0.03),
    ("stream_json", "fast", 0.05),
    ("stream_plain", "fast", 0.03),
]


@dataclass
class Result:
    kind: str
    ok: bool
    status: int
    seconds: float
    header: str = ""
    added_ms: float | None = None


@dataclass
class Run:
    results: list[Result] = field(default_factory=list)
    usage: list[tuple[str, int, int]] = field(default_factory=list)
    hits: list[tuple[str, str]] = field(default_factory=list)


def build_requests(count: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """A seeded mix of (kind, request body); every text differs, so each draws its own faults."""
    rng = random.Random(seed)
    kinds = rng.choices([(k, t) for k, t, _ in MIX], weights=[w for *_, w in MIX], k=count)
    seen: set[str] = set()
    out = []
    for kind, tier in kinds:
        text = ""
        while not text or text in seen:
            text = " ".join(rng.choice(WORDS[tier]) for _ in range(6))
        seen.add(text)
        if kind.startswith("private"):
            text = f"{text} {rng.choice(PRIVATE_SUFFIXES)}"
        body: dict[str, Any] = {"model": "tierwise", "messages": [{"role": "user", "content": text}]}
        if kind in ("json_object", "private_json", "stream_json"):
            body["response_format"] = {"type": "json_object"}
        if kind == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "city", "schema": SCHEMA},
            }
        if kind == "tools":
            body["tools"] = [TOOL]
        if kind.startswith("stream"):
            body["stream"] = True
        out.append((kind, body))
    return out


async def send(client: httpx.AsyncClient, url: str, kind: str, body: dict[str, Any]) -> Result:
    from tierwise.gateway.cascade import check_answer

    started = time.perf_counter()
    if body.get("stream"):
        async with client.stream("POST", url, json=body) as response:
            lines = [line async for line in response.aiter_lines()]
            status, headers = response.status_code, response.headers
        answer = stream_response(lines) if status == 200 else {}
    else:
        response = await client.post(url, json=body)
        status, headers = response.status_code, response.headers
        answer = response.json() if status == 200 else {}
    seconds = time.perf_counter() - started
    ok = status == 200 and check_answer(body, answer) is None
    added = headers.get("x-tierwise-cascade-added-ms")
    header = headers.get("x-tierwise-cascade", "")
    return Result(kind, ok, status, seconds, header, float(added) if added else None)


async def run_all(
    stack: Any, requests: list[tuple[str, dict[str, Any]]], cascade: bool, concurrency: int
) -> Run:
    from tools.cascade_stack import MASTER_KEY

    url = f"{stack.proxy_url}/v1/chat/completions"
    slots = asyncio.Semaphore(concurrency)
    stack.upstream.take()

    async def one(client: httpx.AsyncClient, kind: str, body: dict[str, Any]) -> Result:
        if not cascade:
            body = {**body, "metadata": {"tierwise_cascade": False}}
        async with slots:
            started = time.perf_counter()
            try:
                return await send(client, url, kind, body)
            except httpx.TransportError as err:  # counted as an error, not a crash of the bench
                print(f"transport error ({type(err).__name__}: {err})", file=sys.stderr)
                return Result(kind, False, 0, time.perf_counter() - started)

    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, timeout=120, limits=limits) as client:
        results = await asyncio.gather(*(one(client, kind, body) for kind, body in requests))
    usage = stack.upstream.take_usage()
    return Run(list(results), usage, stack.upstream.take())


# -- figures ------------------------------------------------------------------------------------------


def tier_of_upstream_model(model: str) -> str:
    from tierwise.core.policy_file import DEFAULT_POLICY_FILE, load_policy
    from tierwise.core.scoring import tier_serving

    policy = load_policy(DEFAULT_POLICY_FILE)
    tier = tier_serving(policy, model)
    if tier is None and policy.private_tier is not None and model.startswith("llama"):
        return policy.private_tier.name
    return tier.name if tier is not None else policy.top_tier


def cost_usd(tier: str, prompt: int, completion: int) -> float:
    from tierwise.core.policy_file import DEFAULT_POLICY_FILE, load_policy
    from tierwise.core.scoring import priced_tier, request_cost_usd

    config = priced_tier(load_policy(DEFAULT_POLICY_FILE), tier)
    return float(
        request_cost_usd(prompt, completion, config.input_price_per_million, config.output_price_per_million)
    )


def run_cost(run: Run) -> tuple[float, Counter[str]]:
    calls: Counter[str] = Counter()
    total = 0.0
    for model, prompt, completion in run.usage:
        tier = tier_of_upstream_model(model)
        calls[tier] += 1
        total += cost_usd(tier, prompt, completion)
    return total, calls


def all_frontier_cost(requests: list[tuple[str, dict[str, Any]]]) -> float:
    """Every public request answered by the top tier's model, private ones by the private tier's."""
    upstream = CascadeUpstream()
    total = 0.0
    for kind, body in requests:
        model, tier = ("llama-3.3-70b", "private") if kind.startswith("private") else ("o3", "frontier")
        message, _ = answer_message(upstream, body, model)
        usage = _usage(body, message)
        total += cost_usd(tier, usage["prompt_tokens"], usage["completion_tokens"])
    return total


def private_to_public(run: Run) -> int:
    from tierwise.core.privacy import detect_private_data

    return sum(1 for model, text in run.hits if not model.startswith("llama") and detect_private_data(text))


def attempts_by_tier(run: Run) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """(answers checked per tier, failed checks per tier, retries by from_tier:reason) from the headers."""
    checked: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    retries: Counter[str] = Counter()
    for result in run.results:
        tried = (
            result.header.split(";")[0].split() if result.header and "stream=" not in result.header else []
        )
        for position, step in enumerate(tried):
            tier, _, check = step.partition(":")
            checked[tier] += 1
            if check != "ok":
                failed[tier] += 1
                if position + 1 < len(tried):
                    retries[f"{tier}:{check}"] += 1
    return checked, failed, retries


def mode_row(name: str, run: Run) -> tuple[str, dict[str, Any]]:
    total, calls = run_cost(run)
    n = len(run.results)
    success = sum(r.ok for r in run.results)
    seconds = [r.seconds * 1000 for r in run.results]
    figures = {
        "success_rate": success / n,
        "cost_usd": total,
        "cost_per_success_usd": total / success if success else float("inf"),
        "calls": dict(calls),
        "errors": sum(r.status != 200 for r in run.results),
    }
    line = (
        f"| {name} | {n} | {success / n:.1%} | {figures['errors']} | "
        + " / ".join(str(calls.get(t, 0)) for t in ("fast", "balanced", "frontier", "private"))
        + f" | {total:.4f} | {figures['cost_per_success_usd'] * 1000:.4f} | "
        f"{percentile(seconds, 50):.0f} / {percentile(seconds, 95):.0f} |"
    )
    return line, figures


def kind_success(run: Run, prefix: str) -> float | None:
    chosen = [r for r in run.results if r.kind.startswith(prefix)]
    return sum(r.ok for r in chosen) / len(chosen) if chosen else None


def added_latencies(on: Run) -> tuple[list[float], list[float], list[float]]:
    """The gateway's added ms of non-streamed requests: all, retried (2+ tiers tried), not retried."""
    measured = [
        (r.added_ms, len(r.header.split(";")[0].split())) for r in on.results if r.added_ms is not None
    ]
    return [a for a, _ in measured], [a for a, n in measured if n > 1], [a for a, n in measured if n == 1]


def detail_lines(off: Run, on: Run, feedback: list[dict[str, Any]], exported: int) -> list[str]:
    checked, failed, retries = attempts_by_tier(on)
    added, retried, not_retried = added_latencies(on)
    by_reason = Counter(
        f"{(r['evidence'] or {}).get('tier')}:{(r['evidence'] or {}).get('reason')}" for r in feedback
    )
    return [
        "| tier | answers checked (on) | failed checks | fallback rate | success rate |",
        "|---|---|---|---|---|",
        *(
            f"| {t} | {checked[t]} | {failed[t]} | {failed[t] / checked[t]:.1%} | {1 - failed[t] / checked[t]:.1%} |"
            for t in ("fast", "balanced", "frontier", "private")
            if checked[t]
        ),
        "",
        "retries (from_tier:reason, non-streamed): "
        + ", ".join(f"{k} {v}" for k, v in sorted(retries.items())),
        f"added latency ms, p50 / p95: all {percentile(added, 50):.1f} / {percentile(added, 95):.1f}; "
        f"retried {percentile(retried, 50):.1f} / {percentile(retried, 95):.1f} ({len(retried)}); "
        f"not retried {percentile(not_retried, 50):.2f} / {percentile(not_retried, 95):.2f} ({len(not_retried)})",
        f"streams: JSON (buffered) success off {kind_success(off, 'stream_json'):.1%} / "
        f"on {kind_success(on, 'stream_json'):.1%}; "
        f"plain (unchecked) off {kind_success(off, 'stream_plain'):.1%} / on {kind_success(on, 'stream_plain'):.1%}",
        f"feedback rows (source cascade): {len(feedback)}; by tier:reason "
        + ", ".join(f"{k} {v}" for k, v in sorted(by_reason.items())),
        f"export-feedback rows from them (make data USER_DATA=): {exported}",
        "sample feedback rows (outcome range, evidence): "
        + "; ".join(
            f"[{row['low_tier']}..{row['high_tier']}] {json.dumps(row['evidence'], sort_keys=True)}"
            for row in feedback[:2]
        ),
        f"private requests reaching a public model: off {private_to_public(off)}, on {private_to_public(on)}",
    ]


def report(
    requests: list[tuple[str, dict[str, Any]]],
    off: Run,
    on: Run,
    feedback: list[dict[str, Any]],
    exported: int,
    seed: int,
) -> tuple[str, dict[str, Any]]:
    off_line, off_fig = mode_row("cascade off", off)
    on_line, on_fig = mode_row("cascade on", on)
    frontier_total = all_frontier_cost(requests)
    frontier_cps = frontier_total / len(requests)
    added, retried, not_retried = added_latencies(on)
    lines = [
        f"# Cascade bench: {len(requests)} mixed requests, seed {seed}",
        "",
        "| mode | requests | success | errors | upstream calls fast / balanced / frontier / private "
        "| cost USD | cost per 1,000 successes USD | latency p50 / p95 ms |",
        "|---|---|---|---|---|---|---|---|",
        off_line,
        on_line,
        f"| all-frontier (estimate) | {len(requests)} | 100.0% | 0 | - | {frontier_total:.4f} "
        f"| {frontier_cps * 1000:.4f} | - |",
        "",
        *detail_lines(off, on, feedback, exported),
    ]
    summary = {
        "requests": len(requests),
        "seed": seed,
        "success_rate_off": round(off_fig["success_rate"], 4),
        "success_rate_on": round(on_fig["success_rate"], 4),
        "cost_per_success_ratio": round(on_fig["cost_per_success_usd"] / frontier_cps, 4),
        "cost_per_success_ratio_off": round(off_fig["cost_per_success_usd"] / frontier_cps, 4),
        "p95_added_ms": round(percentile(added, 95), 2),
        "p95_added_ms_retried": round(percentile(retried, 95), 2),
        "p95_added_ms_not_retried": round(percentile(not_retried, 95), 3),
        "retries": sum(attempts_by_tier(on)[2].values()),
        "feedback_rows": len(feedback),
        "errors_on": on_fig["errors"],
        "private_to_public": private_to_public(off) + private_to_public(on),
    }
    return "\n".join(lines) + "\n", summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--output", type=Path, default=Path("runs/cascade.md"))
    args = parser.parse_args(argv)
    from tools.cascade_stack import StackError, cascade_feedback, cascade_stack, exported_rows, report_section

    requests = build_requests(args.requests, args.seed)
    upstream = CascadeUpstream({"gpt-4o-mini": FAST_FAULTS}, seed=args.seed)
    try:
        with cascade_stack(upstream) as stack:
            warm = build_requests(8, args.seed + 1)
            asyncio.run(run_all(stack, warm, True, args.concurrency))
            cascade_feedback(stack.decision_db, settle_seconds=3.0)
            baseline = len(cascade_feedback(stack.decision_db, settle_seconds=0.0))
            off = asyncio.run(run_all(stack, requests, False, args.concurrency))
            on = asyncio.run(run_all(stack, requests, True, args.concurrency))
            feedback = cascade_feedback(stack.decision_db)[baseline:]
            exported = exported_rows(stack.decision_db)
            section = report_section(stack.decision_db, stack.policy_file)
            if any(r.status != 200 for r in (*off.results, *on.results)):
                print(
                    "proxy log tail:\n" + stack.log_file.read_text(errors="replace")[-4000:], file=sys.stderr
                )
    except StackError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text, summary = report(requests, off, on, feedback, exported, args.seed)
    text += (
        "\n`tierwise report` on the bench's decision log (warm-up, off and on runs):\n"
        + "\n".join(section)
        + "\n"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(text)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
