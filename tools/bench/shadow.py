"""The shadow evaluation overhead: a service with a `shadow` policy section against one without,
driven in turn in alternated pairs of runs, shadow calls going to tools/fake_llm.py."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tools.bench.http_load import LoadRow, drive
from tools.harness import free_port, http_get, percentile, served_service, start_process, wait_for_port

SHADOW_DEADLINE_MS = 10_000.0
SHADOW_API_KEY_ENV = "TIERWISE_BENCH_NO_API_KEY"  # an unset variable: no key goes to the fake server


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
    """`on - off` of a statistic over the alternated pairs of runs."""

    mean: float
    low: float
    high: float
    noise: float  # the spread (max - min) of the statistic over the "off" runs alone

    @property
    def within_noise(self) -> bool:
        """The mean slowdown is no larger than the spread between runs of the same (off) service."""
        return self.mean <= self.noise


def paired_difference(off: Sequence[float], on: Sequence[float]) -> PairedDifference:
    if not off or len(off) != len(on):
        raise ValueError("paired_difference needs as many `on` as `off` values, at least one")
    differences = [b - a for a, b in zip(off, on, strict=True)]
    return PairedDifference(
        float(np.mean(differences)), min(differences), max(differences), max(off) - min(off)
    )


def pair_order(pair: int) -> tuple[str, str]:
    """off, on, then on, off, ... (ABBA): a steady drift of the background load cancels out."""
    return ("off", "on") if pair % 2 == 0 else ("on", "off")


def shadow_policy_files(folder: Path, policy_file: Path, base_url: str, share: float) -> dict[str, Path]:
    """Copies of the policy: "off" without a `shadow` section, "on" with one pointing at `base_url`."""
    import yaml

    raw = yaml.safe_load(policy_file.read_text(encoding="utf-8")) or {}
    raw.pop("shadow", None)
    top_model = raw["tiers"][-1]["models"][0]
    paths = {"off": folder / "policy-shadow-off.yaml", "on": folder / "policy-shadow-on.yaml"}
    paths["off"].write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    raw["shadow"] = {
        "share": share,
        "judge_model": top_model,
        "base_url": base_url,
        "api_key_env": SHADOW_API_KEY_ENV,
        "max_usd_per_hour": 1e9,  # the fake server's answers are free; the cap must not skip any
    }
    paths["on"].write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return paths


@dataclass
class ShadowLevel:
    concurrency: int
    rows: dict[str, list[LoadRow]] = field(default_factory=lambda: {"off": [], "on": []})
    evaluations: dict[str, float] = field(default_factory=dict)  # outcome -> count, over the "on" runs
    below_top: float = 0.0  # requests routed below the top tier during the "on" runs (warm-up included)

    def latencies(self, mode: str) -> list[float]:
        return [ms for row in self.rows[mode] for ms in row.latencies_ms]

    def difference(self, q: float) -> PairedDifference:
        off = [percentile(row.latencies_ms, q) for row in self.rows["off"]]
        on = [percentile(row.latencies_ms, q) for row in self.rows["on"]]
        return paired_difference(off, on)


@dataclass
class ShadowOverhead:
    share: float
    pairs: int
    seconds: float
    fake_latency_ms: float
    levels: list[ShadowLevel]


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


def run_shadow_level(
    ports: dict[str, int],
    bodies: list[bytes],
    concurrency: int,
    pairs: int,
    seconds: float,
    warm_up: float,
    below_top: Sequence[str],
) -> ShadowLevel:
    """`pairs` alternated pairs of off/on runs at `concurrency` clients; the on runs' evaluations."""
    level = ShadowLevel(concurrency)
    for pair in range(pairs):
        for mode in pair_order(pair):
            before, below_before = shadow_counts(ports[mode], below_top)
            row = asyncio.run(drive(ports[mode], bodies, concurrency, seconds, warm_up))
            row.server = f"shadow {mode}"
            level.rows[mode].append(row)
            if mode == "on":
                after = wait_shadow_drained(ports[mode], below_top)
                _, below_after = shadow_counts(ports[mode], below_top)
                for outcome, count in after.items():
                    done = count - before.get(outcome, 0.0)
                    level.evaluations[outcome] = level.evaluations.get(outcome, 0.0) + done
                level.below_top += below_after - below_before
            p50 = percentile(row.latencies_ms, 50)
            print(
                f"  shadow {mode}: {concurrency} clients, pair {pair + 1}: "
                f"{row.rate:.0f} req/s, p50 {p50:.1f} ms",
                file=sys.stderr,
            )
    return level


def run_shadow_overhead(
    model_dir: Path,
    policy_file: Path,
    bodies: list[bytes],
    levels: Sequence[int],
    pairs: int,
    seconds: float,
    warm_up: float,
    share: float,
    fake_latency_ms: float,
) -> ShadowOverhead:
    """Two services side by side, shadow off and shadow on (at `share`, against the fake LLM server in
    its own process), driven in turn with the same load: `pairs` alternated pairs of runs per level."""
    from tierwise.core.policy_file import load_policy

    below_top = load_policy(policy_file).tier_names[:-1]
    result = ShadowOverhead(share, pairs, seconds, fake_latency_ms, [])
    with (
        tempfile.TemporaryDirectory(prefix="tierwise-bench-shadow-") as name,
        contextlib.ExitStack() as stack,
    ):
        folder = Path(name)
        fake_port = free_port()
        policies = shadow_policy_files(folder, policy_file, f"http://127.0.0.1:{fake_port}/v1", share)
        stack.enter_context(
            fake_llm_server(fake_port, policies["on"], fake_latency_ms, folder / "fake-llm.log")
        )
        ports = {}
        for mode in ("off", "on"):
            server = served_service(
                model_dir,
                folder / f"server-{mode}.log",
                inherit_settings=True,
                policy_file=policies[mode],
                decision_db=f"sqlite:///{folder / f'decisions-{mode}.sqlite'}",
                workers=1,
                # Under load (and beside a training run) a missed 50 ms deadline routes to the top
                # tier, which is never shadowed: a long deadline keeps the shadow path running.
                deadline_ms=SHADOW_DEADLINE_MS,
            )
            ports[mode] = stack.enter_context(server).port
        for concurrency in levels:
            result.levels.append(
                run_shadow_level(ports, bodies, concurrency, pairs, seconds, warm_up, below_top)
            )
    return result
