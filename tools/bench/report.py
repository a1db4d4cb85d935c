"""The benchmark's markdown: in-process latency, HTTP load and memory, the shadow and controller overheads."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from tools.bench.http_load import ServerRun
from tools.bench.latency import WRAPPED_SYSTEM_TOKENS, LatencyRow
from tools.bench.shadow import (
    BENCH_ROUTES,
    CONTROL_SECTION,
    CONTROLLER,
    REQUEST_PATH,
    SHADOW,
    SHADOW_DEADLINE_MS,
    Comparison,
    PairedLevel,
    PairedOverhead,
)
from tools.harness import percentile

AUTO_PREFIX = "auto-"  # tierwise.core.segments' automatic segment names
ROUTED_NOTE = (
    f"Half the requests (by a hash of the text) carry one of {len(BENCH_ROUTES)} routes, the rest none."
)


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


def paired_cells(level: PairedLevel) -> str:
    """The cells both overhead tables share: req/s, p50 and p99 of each mode, Δ and noise, errors."""
    base, variant = level.comparison
    rate = {m: np.mean([r.rate for r in level.rows[m]]) for m in level.comparison}
    errors = {m: sum(r.errors for r in level.rows[m]) for m in level.comparison}
    cells = [str(level.concurrency), f"{rate[base]:.0f}", f"{rate[variant]:.0f}"]
    for q in (50, 99):
        d = level.difference(q)
        cells += [f"{percentile(level.latencies(m), q):.2f}" for m in level.comparison]
        cells += [f"{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}]", f"{d.noise:.2f}"]
    return "| " + " | ".join([*cells, f"{errors[base]}/{errors[variant]}"]) + " |"


def verdict(level: PairedLevel) -> str:
    within = level.difference(50).within_noise and level.difference(99).within_noise
    return "within noise" if within else "above noise"


def evaluations_cell(level: PairedLevel, mode: str) -> str:
    """`4 judged (1 dropped); 10.0% of 50 below-top requests` over the runs of `mode`."""
    evaluations, below_top = level.evaluations.get(mode, {}), level.below_top.get(mode, 0.0)
    judged = int(evaluations.get("judged", 0))
    others = ", ".join(f"{int(v)} {k}" for k, v in sorted(evaluations.items()) if k != "judged" and v)
    sampled = f"{sum(evaluations.values()) / below_top:.1%}" if below_top else "-"
    return (
        f"{judged} judged{f' ({others})' if others else ''}; {sampled} of {int(below_top)} below-top requests"
    )


def paired_header(comparison: Comparison, extra: Sequence[tuple[str, str]] = ()) -> list[str]:
    """The header of an overhead table: the columns `paired_cells` fills, then `extra` (name,
    alignment) columns and the verdict."""
    base, variant = comparison
    columns = [("clients", "---:"), (f"req/s {base}", "---:"), (f"req/s {variant}", "---:")]
    for q in (50, 99):
        names = (f"p{q} {base} ms", f"p{q} {variant} ms", f"Δp{q} ms", f"p{q} noise ms")
        columns += [(name, "---:") for name in names]
    columns += [(f"errors {base}/{variant}", "---:"), *extra, ("verdict", "---")]
    return ["| " + " | ".join(c[0] for c in columns) + " |", "| " + " | ".join(c[1] for c in columns) + " |"]


def control_section() -> str:
    """CONTROL_SECTION as the policy text the bench gives the controller."""
    return (
        "segment_control: {" + ", ".join(f"{key}: {value:g}" for key, value in CONTROL_SECTION.items()) + "}"
    )


def shadow_report(overhead: PairedOverhead) -> list[str]:
    levels = overhead.comparison(SHADOW)
    if not levels:
        return []
    lines = [
        "",
        f"**Shadow evaluation overhead on POST /classify: off vs on at share {overhead.share:g}**",
        "",
        f"Two services side by side (same model, policy and decision log settings, score cache off; one "
        f"with a `shadow` section), driven in turn: {overhead.pairs} pairs of {overhead.seconds:g} s runs per level, "
        "alternated off/on, on/off, ... Shadow calls go to tools/fake_llm.py in its own process on the "
        f"same machine ({overhead.fake_latency_ms:g} ms per answer). Δ = on - off per pair: mean "
        "[min, max]; noise = the spread (max - min) of the off runs alone; within noise when mean Δ <= noise. "
        f"Both services with a {SHADOW_DEADLINE_MS:g} ms classifier deadline (a missed deadline routes to "
        "the top tier, which is never shadowed). Shadow evaluations: counted from /metrics "
        "`tierwise_shadow_evaluations_total` over the on runs (warm-up included), against the requests "
        f"routed below the top tier in them. {ROUTED_NOTE}",
        "",
        *paired_header(SHADOW, [("shadow evaluations", "---")]),
    ]
    return lines + [
        f"{paired_cells(level)} {evaluations_cell(level, 'on')} | {verdict(level)} |" for level in levels
    ]


def segments_note(segments: dict[str, float]) -> str:
    """How the control service's decisions fell on the two segment paths (from /metrics)."""
    routed = {k: v for k, v in segments.items() if k in BENCH_ROUTES}
    automatic = {k: v for k, v in segments.items() if k.startswith(AUTO_PREFIX)}
    return (
        f"Decisions of the control service by segment (/metrics `tierwise_segment_decisions_total`, "
        f"warm-up included): {int(sum(routed.values()))} in {len(routed)} routes, "
        f"{int(sum(automatic.values()))} in {len(automatic)} automatic segments"
        + (
            ""
            if automatic
            else " (the model folder has no `segments.npz`: unrouted requests have no segment)"
        )
        + "."
    )


def request_path_report(overhead: PairedOverhead) -> list[str]:
    """The controller on the request path alone: no shadow in either service."""
    levels = overhead.comparison(REQUEST_PATH)
    if not levels:
        return []
    lines = [
        "",
        "**Per-segment controller on the request path of POST /classify: off vs guarded (no shadow)**",
        "",
        "Two services side by side with the same decision log, score cache off and no `shadow` section; "
        "guarded adds "
        f"`{control_section()}`: each request's segment (its route, else the automatic segment "
        "from the model folder), its setting read from a dict, the policy's rule 1 with it, a background "
        f"refresh every second. {overhead.pairs} pairs of {overhead.seconds:g} s runs per level, "
        "alternated. Δ = guarded - off per pair: mean [min, max]; noise = the spread of the off runs; "
        f"within noise when mean Δ <= noise. {ROUTED_NOTE}",
        "",
        *paired_header(REQUEST_PATH),
    ]
    lines += [f"{paired_cells(level)} {verdict(level)} |" for level in levels]
    return lines


def controller_report(overhead: PairedOverhead) -> list[str]:
    levels = overhead.comparison(CONTROLLER)
    if not levels:
        return []
    lines = [
        "",
        "**Per-segment controller overhead on POST /classify: on vs control**",
        "",
        f"Two services side by side, both with the same `shadow` section (share {overhead.share:g}, "
        f"tools/fake_llm.py at {overhead.fake_latency_ms:g} ms per answer) and decision log; control adds "
        f"`{control_section()}` (serving/tierwise/evidence/segment_control.py: a segment per "
        "request, its setting read from a dict, a background refresh from the decision log every second). "
        f"{overhead.pairs} pairs of {overhead.seconds:g} s runs per level, alternated on/control, control/on "
        f"and so on{', interleaved with the shadow pairs' if overhead.comparison(SHADOW) else ''}. "
        "Δ = control - on per pair: mean [min, max]; noise = the "
        "spread (max - min) of the on runs alone; within noise when mean Δ <= noise. As deployed, the "
        "controller also boosts the shadow share of segments whose bound is not yet tight (`explore_boost`, "
        "x4 in cold start) and routes cold-start segments higher, so part of Δ is the extra shadow work: "
        "shadow judged = the evaluations judged during each service's runs (/metrics, warm-up included). "
        f"{ROUTED_NOTE}",
        "",
        *paired_header(CONTROLLER, [("shadow judged on/control", "---:")]),
    ]
    for level in levels:
        judged = [int(level.evaluations.get(mode, {}).get("judged", 0)) for mode in level.comparison]
        lines.append(f"{paired_cells(level)} {judged[0]}/{judged[1]} | {verdict(level)} |")
    if overhead.segments:
        lines += ["", segments_note(overhead.segments)]
    return lines


def markdown_report(
    model_note: str,
    prompt_note: str,
    latency: list[LatencyRow],
    runs: list[ServerRun],
    seconds: float,
    torch_note: str,
    shadow: PairedOverhead | None = None,
) -> str:
    lines = [f"Model: {model_note}. Prompts: {prompt_note}. CPU cores: {os.cpu_count()}."]
    lines += latency_lines(latency)
    lines += http_lines(runs, seconds)
    if shadow is not None:
        lines += shadow_report(shadow) + request_path_report(shadow) + controller_report(shadow)
    if torch_note:
        lines += ["", torch_note]
    return "\n".join(lines) + "\n"
