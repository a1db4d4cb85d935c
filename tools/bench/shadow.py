"""Paired overhead runs on /classify: services that differ by one policy section, driven in turn in
alternated pairs of runs. The modes: "off" (no `shadow` section), "on" (a `shadow` section, its calls
going to tools/fake_llm.py) and "control" ("on" plus a `segment_control` section: the per-segment risk
controller). The comparisons: SHADOW ("off" vs "on") and CONTROLLER ("on" vs "control")."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tools.bench.http_load import LoadRow, drive
from tools.harness import free_port, http_get, percentile, served_service, start_process, wait_for_port

SHADOW_DEADLINE_MS = 10_000.0
SHADOW_API_KEY_ENV = "TIERWISE_BENCH_NO_API_KEY"  # an unset variable: no key goes to the fake server

Comparison = tuple[str, str]  # (base mode, variant mode): Δ = variant - base
SHADOW: Comparison = ("off", "on")  # the shadow evaluation's overhead
CONTROLLER: Comparison = ("on", "control")  # the per-segment controller's, over the same shadow
# The controller's cost on the request path alone: no shadow in either, so no judge calls share the cores.
REQUEST_PATH: Comparison = ("off", "guarded")
MODES = ("off", "on", "guarded", "control")
SHADOWED = frozenset({"on", "control"})  # the modes whose policy has a `shadow` section
# The controller of the "control" mode; a 1 s refresh so its background thread runs during the load.
CONTROL_SECTION = {"max_under_routing": 0.05, "judge_error_rate": 0.1, "refresh_seconds": 1}
BENCH_ROUTES = tuple(f"bench-route-{i}" for i in range(8))  # no override in the policy names these


def routed_body(text: str) -> bytes:
    """The /classify body of `text`: half the texts (by a stable hash) carry one of BENCH_ROUTES, so
    both segment paths run (the route; else the model folder's automatic segment, when it has one)."""
    digest = zlib.crc32(text.encode("utf-8"))
    body: dict[str, str] = {"text": text}
    if digest % 2:
        body["route"] = BENCH_ROUTES[(digest >> 1) % len(BENCH_ROUTES)]
    return json.dumps(body).encode()


def modes_of(comparisons: Sequence[Comparison]) -> list[str]:
    """The services a set of comparisons needs, in MODES order."""
    wanted = {mode for comparison in comparisons for mode in comparison}
    return [mode for mode in MODES if mode in wanted]


def metric_samples(text: str, name: str) -> dict[str, float]:
    """The samples of one metric in Prometheus text format: label set (as written, "" for none) -> value."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric, brace, labels = head.partition("{")
        if metric != name:
            continue
        key = labels.rstrip("}") if brace else ""
        try:
            samples[key] = samples.get(key, 0.0) + float(value)
        except ValueError:
            continue
    return samples


def label_value(labels: str, key: str) -> str | None:
    """The value of `key` in a label set as `metric_samples` keys it (`a="x",b="y"`)."""
    for part in labels.split(","):
        name, _, value = part.partition("=")
        if name.strip() == key:
            return value.strip().strip('"')
    return None


@dataclass(frozen=True)
class PairedDifference:
    """`variant - base` of a statistic over the alternated pairs of runs."""

    mean: float
    low: float
    high: float
    noise: float  # the spread (max - min) of the statistic over the base runs alone

    @property
    def within_noise(self) -> bool:
        """The mean slowdown is no larger than the spread between runs of the same (base) service."""
        return self.mean <= self.noise


def paired_difference(base: Sequence[float], variant: Sequence[float]) -> PairedDifference:
    if not base or len(base) != len(variant):
        raise ValueError("paired_difference needs as many variant as base values, at least one")
    differences = [b - a for a, b in zip(base, variant, strict=True)]
    return PairedDifference(
        float(np.mean(differences)), min(differences), max(differences), max(base) - min(base)
    )


def pair_order(pair: int, comparison: Comparison = SHADOW) -> tuple[str, str]:
    """base, variant, then variant, base, ... (ABBA): a steady drift of the background load cancels out."""
    base, variant = comparison
    return (base, variant) if pair % 2 == 0 else (variant, base)


def policy_files(
    folder: Path, policy_file: Path, base_url: str, share: float, modes: Sequence[str] = MODES
) -> dict[str, Path]:
    """Copies of the policy for `modes`: "off" without a `shadow` section, "on" with one pointing at
    `base_url`, "control" the same plus CONTROL_SECTION as its `segment_control`, "guarded" that
    `segment_control` without a shadow."""
    import yaml

    raw = yaml.safe_load(policy_file.read_text(encoding="utf-8")) or {}
    for section in ("shadow", "segment_control"):
        raw.pop(section, None)
    top_model = raw["tiers"][-1]["models"][0]
    shadow = {
        "share": share,
        "judge_model": top_model,
        "base_url": base_url,
        "api_key_env": SHADOW_API_KEY_ENV,
        "max_usd_per_hour": 1e9,  # the fake server's answers are free; the cap must not skip any
    }
    sections: dict[str, dict[str, object]] = {
        "off": {},
        "on": {"shadow": shadow},
        "guarded": {"segment_control": dict(CONTROL_SECTION)},
        "control": {"shadow": shadow, "segment_control": dict(CONTROL_SECTION)},
    }
    paths = {}
    for mode in modes:
        paths[mode] = folder / f"policy-{mode}.yaml"
        paths[mode].write_text(yaml.safe_dump({**raw, **sections[mode]}, sort_keys=False), encoding="utf-8")
    return paths


@dataclass
class PairedLevel:
    """One comparison at one client count: the runs of its two modes, and the shadow evaluations."""

    concurrency: int
    comparison: Comparison = SHADOW
    rows: dict[str, list[LoadRow]] = field(default_factory=dict)
    # mode -> outcome -> count, over that mode's runs (shadowed modes only, warm-up included)
    evaluations: dict[str, dict[str, float]] = field(default_factory=dict)
    below_top: dict[str, float] = field(default_factory=dict)  # mode -> requests routed below the top

    def __post_init__(self) -> None:
        for mode in self.comparison:
            self.rows.setdefault(mode, [])

    def latencies(self, mode: str) -> list[float]:
        return [ms for row in self.rows[mode] for ms in row.latencies_ms]

    def difference(self, q: float) -> PairedDifference:
        base, variant = self.comparison
        return paired_difference(
            [percentile(row.latencies_ms, q) for row in self.rows[base]],
            [percentile(row.latencies_ms, q) for row in self.rows[variant]],
        )


@dataclass
class PairedOverhead:
    share: float
    pairs: int
    seconds: float
    fake_latency_ms: float
    levels: list[PairedLevel]  # every comparison's, in the order run
    segments: dict[str, float] = field(default_factory=dict)  # "control" decisions by segment name

    def comparison(self, comparison: Comparison) -> list[PairedLevel]:
        return [level for level in self.levels if level.comparison == comparison]


def shadow_counts(port: int, tiers_below_top: Sequence[str]) -> tuple[dict[str, float], float]:
    """(shadow evaluations by outcome, decisions below the top tier) from the server's /metrics."""
    text = http_get(port, "/metrics", timeout=5)[1].decode("utf-8")
    outcomes: dict[str, float] = {}
    for labels, value in metric_samples(text, "tierwise_shadow_evaluations_total").items():
        outcome = label_value(labels, "outcome") or ""
        outcomes[outcome] = outcomes.get(outcome, 0.0) + value
    decisions = metric_samples(text, "tierwise_decisions_total")
    below = sum(v for labels, v in decisions.items() if label_value(labels, "tier") in tiers_below_top)
    return outcomes, below


def wait_shadow_drained(port: int, tiers: Sequence[str], timeout: float = 15.0) -> dict[str, float]:
    """Wait until the shadow evaluation count stops moving (the queue is empty), then return it."""
    deadline = time.monotonic() + timeout
    last, _ = shadow_counts(port, tiers)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now, _ = shadow_counts(port, tiers)
        if now == last:
            return now
        last = now
    return last


@contextlib.contextmanager
def fake_llm_server(port: int, policy_file: Path, latency_ms: float, log_path: Path) -> Iterator[None]:
    """tools/fake_llm.py in its own process on `port`, answering the policy's models."""
    command = [sys.executable, "-m", "tools.fake_llm", "--port", str(port)]
    command += ["--policy", str(policy_file), "--latency-ms", str(latency_ms)]
    process = start_process(command, log_path)
    try:
        wait_for_port(port, process, "fake LLM server")
        yield
    except Exception:
        sys.stderr.write(log_path.read_text(encoding="utf-8", errors="replace")[-4000:])
        raise
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def timed_run(
    port: int,
    mode: str,
    bodies: list[bytes],
    concurrency: int,
    seconds: float,
    warm_up: float,
    below_top: Sequence[str],
) -> tuple[LoadRow, dict[str, float], float]:
    """One run of `mode`; for a shadowed mode, once its shadow queue is drained: (the run, its shadow
    evaluations by outcome, its requests routed below the top tier)."""
    before, below_before = shadow_counts(port, below_top) if mode in SHADOWED else ({}, 0.0)
    row = asyncio.run(drive(port, bodies, concurrency, seconds, warm_up))
    row.server = mode
    if mode not in SHADOWED:
        return row, {}, 0.0
    after = wait_shadow_drained(port, below_top)  # the next run starts on a quiet machine
    _, below_after = shadow_counts(port, below_top)
    done = {outcome: count - before.get(outcome, 0.0) for outcome, count in after.items()}
    return row, done, below_after - below_before


def run_levels(
    ports: dict[str, int],
    bodies: list[bytes],
    concurrency: int,
    comparisons: Sequence[Comparison],
    pairs: int,
    seconds: float,
    warm_up: float,
    below_top: Sequence[str],
) -> list[PairedLevel]:
    """`pairs` alternated pairs of runs of each comparison at `concurrency` clients, the comparisons'
    pairs interleaved (pair 1 of each, then pair 2 of each, ...) so a drift of the load hits them alike."""
    levels = [PairedLevel(concurrency, comparison) for comparison in comparisons]
    for pair in range(pairs):
        for level in levels:
            for mode in pair_order(pair, level.comparison):
                row, done, below = timed_run(
                    ports[mode], mode, bodies, concurrency, seconds, warm_up, below_top
                )
                level.rows[mode].append(row)
                evaluations = level.evaluations.setdefault(mode, {})
                for outcome, count in done.items():
                    evaluations[outcome] = evaluations.get(outcome, 0.0) + count
                level.below_top[mode] = level.below_top.get(mode, 0.0) + below
                print(
                    f"  {mode} ({'/'.join(level.comparison)}): {concurrency} clients, pair {pair + 1}: "
                    f"{row.rate:.0f} req/s, p50 {percentile(row.latencies_ms, 50):.1f} ms",
                    file=sys.stderr,
                )
    return levels


def segment_decisions(port: int) -> dict[str, float]:
    """Decisions by segment name from /metrics (requests without a segment are not counted there)."""
    text = http_get(port, "/metrics", timeout=5)[1].decode("utf-8")
    by_segment: dict[str, float] = {}
    for labels, value in metric_samples(text, "tierwise_segment_decisions_total").items():
        segment = label_value(labels, "segment") or ""
        by_segment[segment] = by_segment.get(segment, 0.0) + value
    return by_segment


def run_paired_overhead(
    model_dir: Path,
    policy_file: Path,
    bodies: list[bytes],
    levels: Sequence[int],
    pairs: int,
    seconds: float,
    warm_up: float,
    share: float,
    fake_latency_ms: float,
    comparisons: Sequence[Comparison] = (SHADOW, CONTROLLER),
) -> PairedOverhead:
    """The services `comparisons` needs side by side (shadow calls at `share` going to the fake LLM
    server in its own process), driven in turn with the same load: `pairs` alternated pairs of runs
    per comparison and level."""
    from tierwise.core.policy_file import load_policy

    below_top = load_policy(policy_file).tier_names[:-1]
    result = PairedOverhead(share, pairs, seconds, fake_latency_ms, [])
    with (
        tempfile.TemporaryDirectory(prefix="tierwise-bench-shadow-") as name,
        contextlib.ExitStack() as stack,
    ):
        folder = Path(name)
        fake_port = free_port()
        modes = modes_of(comparisons)
        policies = policy_files(folder, policy_file, f"http://127.0.0.1:{fake_port}/v1", share, modes)
        stack.enter_context(fake_llm_server(fake_port, policy_file, fake_latency_ms, folder / "fake-llm.log"))
        ports = {}
        for mode in modes:
            server = served_service(
                model_dir,
                folder / f"server-{mode}.log",
                inherit_settings=True,
                policy_file=policies[mode],
                decision_db=f"sqlite:///{folder / f'decisions-{mode}.sqlite'}",
                workers=1,
                record_decisions="true",  # the controller's evidence, and the shadow's verdicts
                score_cache_size=0,  # every request scored: a cache warming at its own pace per service is noise
                # Under load (and beside a training run) a missed 50 ms deadline routes to the top
                # tier, which is never shadowed: a long deadline keeps the shadow path running.
                deadline_ms=SHADOW_DEADLINE_MS,
            )
            ports[mode] = stack.enter_context(server).port
        for concurrency in levels:
            result.levels += run_levels(
                ports, bodies, concurrency, comparisons, pairs, seconds, warm_up, below_top
            )
        if "control" in ports:
            result.segments = segment_decisions(ports["control"])
    return result
