"""`tierwise audit`: categorize every request in existing logs and see what routing would save.

Every request of the logs (tierwise/ops/request_logs.py reads the formats) goes through the same
classifier and routing policy as the service. The logs are cut into chunks of `batch_size` requests
and each chunk is classified as one batch by `ChunkAuditor`. The local engine maps the chunks in this
process; `--engine ray` maps the same chunks with Ray Data `map_batches` on a local Ray or a cluster.
The per-chunk totals are integers and counters (tierwise/ops/audit_totals.py), merged in any order,
so both engines give identical results (the int8 model quantizes each batch dynamically, so the
chunking itself is part of the contract). The report is tierwise/ops/audit_report.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tierwise.core.classifier import TierClassifier
from tierwise.core.decide import score_then_decide
from tierwise.core.model_folder import load_manifest
from tierwise.core.policy import Policy, RoutingInput
from tierwise.core.policy_file import load_policy
from tierwise.ops.audit_report import summarize
from tierwise.ops.audit_totals import MAX_ERRORS_KEPT, AuditTotals, token_bin
from tierwise.ops.progress import progress_bar
from tierwise.ops.request_logs import AuditError, Chunk, chunk_requests, plan_chunks

ENGINES = ("local", "ray")


class ChunkAuditor:
    """Loads the classifier and policy once; `__call__(chunk)` returns the chunk's totals."""

    def __init__(self, model_dir: str, policy_file: str, threads: int = 0) -> None:
        self.classifier = TierClassifier(Path(model_dir), intra_op_threads=threads)
        self.policy: Policy = load_policy(Path(policy_file))
        self.policy.check_model_tiers(self.classifier.tiers)

    def __call__(self, chunk: Chunk) -> AuditTotals:
        totals = AuditTotals()
        requests = chunk_requests(chunk)
        good = [(where, text) for where, text, error in requests if error is None and text is not None]
        for where, _, error in requests:
            if error is not None:
                totals.unreadable += 1
                if len(totals.errors) < MAX_ERRORS_KEPT:
                    totals.errors.append((where, error))
        if not good:
            return totals
        routing = [RoutingInput(text=text.text, request=text) for _, text in good]
        for decision in score_then_decide(self.classifier, self.policy, routing):
            tokens = int(decision.token_count or 0)
            totals.requests += 1
            totals.routed[decision.tier] += 1
            if decision.predicted_tier is not None:
                totals.predicted[decision.predicted_tier] += 1
            totals.input_tokens[decision.tier] += tokens
            totals.escalated += int(decision.escalated)
            totals.reasons.update(decision.reasons)
            totals.token_bins[token_bin(tokens)] += 1
        return totals


ProgressCallback = Callable[[int], object]  # rows just finished


def audit_local(
    chunks: Sequence[Chunk], model_dir: Path, policy_file: Path, threads: int, progress: ProgressCallback
) -> AuditTotals:
    auditor = ChunkAuditor(str(model_dir), str(policy_file), threads)
    totals = AuditTotals()
    for chunk in chunks:
        totals.merge(auditor(chunk))
        progress(chunk.rows)
    return totals


class RayChunkAuditor:
    """The Ray Data `map_batches` callable: one `ChunkAuditor` per actor, chunks in, totals out."""

    def __init__(self, model_dir: str, policy_file: str, threads: int) -> None:
        self.auditor = ChunkAuditor(model_dir, policy_file, threads)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        keys = ("path", "kind", "start", "stop", "first_line", "rows")
        results: list[str] = []
        rows: list[int] = []
        for values in zip(*(batch[k] for k in keys), strict=True):
            chunk = Chunk(str(values[0]), str(values[1]), *(int(v) for v in values[2:]))
            results.append(self.auditor(chunk).to_json())
            rows.append(chunk.rows)
        return {"totals": results, "rows": rows}


def start_ray(address: str | None, cpus: int | None) -> bool:
    """Connect to the Ray cluster at `address`, else start a local Ray with `cpus` CPUs; False when
    Ray was already running in this process (then it is not ours to shut down)."""
    try:
        import ray
    except ImportError as err:
        raise AuditError("--engine ray needs Ray Data: pip install 'tierwise[audit]'") from err
    if ray.is_initialized():
        return False
    init: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address:
        init["address"] = address
    elif cpus:
        init["num_cpus"] = cpus
    ray.init(**init)
    return True


def audit_ray(
    chunks: Sequence[Chunk],
    model_dir: Path,
    policy_file: Path,
    progress: ProgressCallback,
    address: str | None = None,
    actors: int | None = None,
    threads_per_actor: int = 1,
    startup_seconds: dict[str, float] | None = None,
) -> AuditTotals:
    """The same chunks through Ray Data `map_batches` (a local Ray unless `address` is given), with
    `actors` Ray actors (default: one per `threads_per_actor` CPUs).

    On a cluster, the logs and the model folder must be readable at the same paths on every node.
    """
    startup_seconds = {} if startup_seconds is None else startup_seconds
    init_started = time.perf_counter()
    started_here = start_ray(address, actors * threads_per_actor if actors else None)
    import ray

    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        startup_seconds["ray_init"] = time.perf_counter() - init_started
        cpus = int(ray.available_resources().get("CPU", 1))
        concurrency = actors or max(1, cpus // threads_per_actor)
        dataset = ray.data.from_items(
            [asdict(c) for c in chunks], override_num_blocks=max(1, min(len(chunks), concurrency * 4))
        )
        results = dataset.map_batches(
            RayChunkAuditor,
            fn_constructor_kwargs={
                "model_dir": str(Path(model_dir).resolve()),
                "policy_file": str(Path(policy_file).resolve()),
                "threads": threads_per_actor,
            },
            batch_size=1,
            concurrency=concurrency,
            num_cpus=threads_per_actor,
        )
        totals = AuditTotals()
        for row in results.iter_rows():
            totals.merge(AuditTotals.from_json(row["totals"]))
            progress(int(row["rows"]))
        return totals
    finally:
        if started_here:
            ray.shutdown()


@dataclass(frozen=True)
class AuditOptions:
    """How to run an audit: the engine and its resources, and what the report should project."""

    engine: str = "local"  # local | ray
    batch_size: int = 256  # requests per classifier batch (and per chunk)
    threads: int = 0  # onnxruntime threads of the local engine (0 = all cores)
    ray_address: str | None = None  # a Ray cluster; None: start a local Ray
    ray_actors: int | None = None  # Ray actors; None: one per CPU
    period_days: float | None = None  # days the logs cover, to project a month
    show_progress: bool = True


def run_audit(
    logs: Sequence[Path], model_dir: Path, policy_file: Path, options: AuditOptions | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(summary, meta) for the logs with the chosen engine."""
    options = options or AuditOptions()
    if options.engine not in ENGINES:
        raise AuditError(f"--engine must be local or ray, got {options.engine!r}")
    chunks = plan_chunks(logs, options.batch_size)
    bar = progress_bar(sum(c.rows for c in chunks), options.show_progress, "audit")
    started = time.perf_counter()
    startup: dict[str, float] = {}
    try:
        if options.engine == "ray":
            totals = audit_ray(
                chunks,
                model_dir,
                policy_file,
                bar.update,
                options.ray_address,
                options.ray_actors,
                startup_seconds=startup,
            )
        else:
            totals = audit_local(chunks, model_dir, policy_file, options.threads, bar.update)
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    summary = summarize(totals, load_policy(policy_file), options.period_days)
    meta = {
        "logs": [str(p) for p in logs],
        "model_version": load_manifest(model_dir).version,
        "policy": str(policy_file),
        "engine": options.engine,
        "batch_size": options.batch_size,
        "seconds": seconds,
        "requests_per_second": (totals.requests + totals.unreadable) / seconds if seconds > 0 else 0.0,
        "ray_init_seconds": startup.get("ray_init"),
    }
    return summary, meta
