"""The benchmark's markdown: in-process latency, HTTP load and memory, the shadow overhead."""

from __future__ import annotations

import os

import numpy as np

from tools.bench.http_load import ServerRun
from tools.bench.latency import WRAPPED_SYSTEM_TOKENS, LatencyRow
from tools.bench.shadow import SHADOW_DEADLINE_MS, ShadowLevel, ShadowOverhead
from tools.harness import percentile


def latency_lines(latency: list[LatencyRow]) -> list[str]:
    if not latency:
        return []
    lines = [
        "",
        "**Classifier in-process, batch 1 (tokenize + infer + calibrate)**",
        "",
        "| engine | request | prompt tokens | tokens seen | p50 ms | p99 ms | p99/p50 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in latency:
        request = (
            "bare" if row.shape == "bare" else f"64-token task + {WRAPPED_SYSTEM_TOKENS}-token system prompt"
        )
        lines.append(
            f"| {row.engine} | {request} | {row.tokens} | {row.seen_tokens} | {row.p50_ms:.2f} | {row.p99_ms:.2f} "
            f"| {row.p99_ms / row.p50_ms:.2f} |"
        )
    by_key = {(r.engine, r.tokens): r for r in latency if r.shape == "bare"}
    ratios = [
        f"{tokens} tokens {by_key[('pytorch-eager', tokens)].p50_ms / row.p50_ms:.1f}x"
        for (engine, tokens), row in by_key.items()
        if engine == "onnxruntime" and ("pytorch-eager", tokens) in by_key
    ]
    if ratios:
        lines += ["", f"PyTorch eager p50 / onnxruntime p50: {', '.join(ratios)}."]
    return lines


def http_lines(runs: list[ServerRun], seconds: float) -> list[str]:
    if not runs:
        return []
    lines = [
        "",
        f"**HTTP POST /classify on loopback, {seconds:g} s per level, keep-alive clients**",
        "",
        "| server | clients | req/s | p50 ms | p99 ms | errors | top tier by deadline |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        for row in run.rows:
            upward = f"{100 * row.upward / row.requests:.1f}%" if row.requests else "-"
            p50, p99 = percentile(row.latencies_ms, 50), percentile(row.latencies_ms, 99)
            lines.append(
                f"| {run.name} | {row.concurrency} | {row.rate:.0f} | {p50:.1f} | {p99:.1f} "
                f"| {row.errors} | {upward} |"
            )
    lines += ["", "| server | RSS after load MiB | peak RSS MiB |", "| --- | ---: | ---: |"]
    lines += [f"| {run.name} | {run.rss_mib:.0f} | {run.peak_rss_mib:.0f} |" for run in runs]
    onnx_run = next((r for r in runs if r.name == "onnx, micro-batching"), None)
    torch_run = next((r for r in runs if r.name.startswith("pytorch")), None)
    if onnx_run and torch_run:
        pairs = [
            f"{a.concurrency} clients {a.rate / b.rate:.1f}x"
            for a, b in zip(onnx_run.rows, torch_run.rows, strict=True)
            if b.rate
        ]
        lines += ["", f"Throughput onnx (micro-batching) / PyTorch eager: {', '.join(pairs)}."]
    return lines


def shadow_row(level: ShadowLevel) -> str:
    rate = {m: np.mean([r.rate for r in level.rows[m]]) for m in ("off", "on")}
    errors = {m: sum(r.errors for r in level.rows[m]) for m in ("off", "on")}
    d50, d99 = level.difference(50), level.difference(99)
    judged = int(level.evaluations.get("judged", 0))
    others = ", ".join(f"{int(v)} {k}" for k, v in sorted(level.evaluations.items()) if k != "judged" and v)
    offered = sum(level.evaluations.values())
    sampled = f"{offered / level.below_top:.1%}" if level.below_top else "-"
    evaluations = (
        f"{judged} judged{f' ({others})' if others else ''}; {sampled} of {int(level.below_top)} "
        "below-top requests"
    )
    verdict = "within noise" if d50.within_noise and d99.within_noise else "above noise"
    return (
        f"| {level.concurrency} | {rate['off']:.0f} | {rate['on']:.0f} "
        f"| {percentile(level.latencies('off'), 50):.2f} | {percentile(level.latencies('on'), 50):.2f} "
        f"| {d50.mean:+.2f} [{d50.low:+.2f}, {d50.high:+.2f}] | {d50.noise:.2f} "
        f"| {percentile(level.latencies('off'), 99):.2f} | {percentile(level.latencies('on'), 99):.2f} "
        f"| {d99.mean:+.2f} [{d99.low:+.2f}, {d99.high:+.2f}] | {d99.noise:.2f} "
        f"| {errors['off']}/{errors['on']} | {evaluations} | {verdict} |"
    )


def shadow_report(overhead: ShadowOverhead) -> list[str]:
    lines = [
        "",
        f"**Shadow evaluation overhead on POST /classify: off vs on at share {overhead.share:g}**",
        "",
        f"Two services side by side (same model, policy and decision log settings; one with a `shadow` "
        f"section), driven in turn: {overhead.pairs} pairs of {overhead.seconds:g} s runs per level, "
        "alternated off/on, on/off, ... Shadow calls go to tools/fake_llm.py in its own process on the "
        f"same machine ({overhead.fake_latency_ms:g} ms per answer). Δ = on - off per pair: mean "
        "[min, max]; noise = the spread (max - min) of the off runs alone; within noise when mean Δ <= noise. "
        f"Both services with a {SHADOW_DEADLINE_MS:g} ms classifier deadline (a missed deadline routes to "
        "the top tier, which is never shadowed). Shadow evaluations: counted from /metrics "
        "`tierwise_shadow_evaluations_total` over the on runs (warm-up included), against the requests "
        "routed below the top tier in them.",
        "",
        "| clients | req/s off | req/s on | p50 off ms | p50 on ms | Δp50 ms | p50 noise ms | p99 off ms "
        "| p99 on ms | Δp99 ms | p99 noise ms | errors off/on | shadow evaluations | verdict |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    return lines + [shadow_row(level) for level in overhead.levels]


def markdown_report(
    model_note: str,
    prompt_note: str,
    latency: list[LatencyRow],
    runs: list[ServerRun],
    seconds: float,
    torch_note: str,
    shadow: ShadowOverhead | None = None,
) -> str:
    lines = [f"Model: {model_note}. Prompts: {prompt_note}. CPU cores: {os.cpu_count()}."]
    lines += latency_lines(latency)
    lines += http_lines(runs, seconds)
    if shadow is not None:
        lines += shadow_report(shadow)
    if torch_note:
        lines += ["", torch_note]
    return "\n".join(lines) + "\n"
