"""`tierwise audit LOGS`: categorize every request in existing logs and see what routing would save.

Logs are JSONL (OpenAI chat requests `{"model", "messages"}`, OpenAI Batch API lines `{"body": {...}}`,
`{"text"}`, `{"prompt"}` or Responses-style `{"input"}`), plain text (`.txt`: one prompt per line) or
Parquet (a `text`, `prompt` or `messages` column). Every request goes through the same classifier and
routing policy as the service.

The logs are cut into chunks of `batch_size` requests (byte ranges of JSONL/text files, row ranges
inside Parquet row groups) and each chunk is classified as one batch by `audit_chunk`. The local engine
maps the chunks in this process; `--engine ray` maps the same chunks with Ray Data `map_batches` on a
local Ray or a cluster. The per-chunk totals are integers and counters, merged in any order, so both
engines give identical results (the int8 model quantizes each batch dynamically, so the chunking
itself is part of the contract).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tierwise.core.policy import Policy, RoutingInput, load_policy
from tierwise.core.request_text import ClassifierInput, RequestTextError, content_text, request_input

MAX_ERRORS_KEPT = 20
TOKEN_BIN_EDGES = tuple(2**k for k in range(4, 21))  # 16 .. 1M tokens; the last bin is open
SIZE_BANDS = ((0, 256), (256, 1024), (1024, 4096), (4096, 16384), (16384, None))
PARQUET_TEXT_COLUMNS = ("text", "prompt", "messages", "input")


class AuditError(ValueError):
    """A log cannot be audited; the message says what to change."""


# ---------------------------------------------------------------------------------------------
# Reading requests
# ---------------------------------------------------------------------------------------------


def logged_request(record: Any) -> ClassifierInput:
    """What the classifier reads of one logged request; raises RequestTextError naming what is missing."""
    if isinstance(record, str):
        if not record.strip():
            raise RequestTextError("the line is empty")
        return ClassifierInput.plain(record)
    if not isinstance(record, Mapping):
        raise RequestTextError("row must be a JSON object or a string")
    if isinstance(record.get("body"), Mapping):  # OpenAI Batch API: {"custom_id", "method", "url", "body"}
        return logged_request(record["body"])
    if record.get("messages") is not None or record.get("text") is not None:
        return request_input(record)
    prompt = record.get("prompt")
    if isinstance(prompt, str) and prompt.strip():
        return ClassifierInput.plain(prompt)
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt) and "".join(prompt).strip():
        return ClassifierInput.plain("\n".join(prompt))
    given = record.get("input")
    if isinstance(given, str) and given.strip():
        return ClassifierInput.plain(given)
    if isinstance(given, list) and given:
        messages = [m for m in given if isinstance(m, Mapping)]
        if messages:
            return request_input({"messages": [{**m, "content": content_text_any(m)} for m in messages]})
    raise RequestTextError("row needs 'messages', 'text', 'prompt', 'input' or an OpenAI batch 'body'")


def request_text(record: Any) -> str:
    """Every word of one logged request."""
    return logged_request(record).text


def content_text_any(message: Mapping[str, Any]) -> str:
    """Responses-API content parts use `input_text`; chat uses `text`."""
    content = message.get("content")
    if isinstance(content, list):
        parts = [
            p.get("text", "")
            for p in content
            if isinstance(p, Mapping) and p.get("type") in {"text", "input_text"}
        ]
        return "\n".join(str(p) for p in parts)
    return content_text(content)


@dataclass(frozen=True)
class Chunk:
    """Up to `batch_size` consecutive requests of one log file, classified as one batch."""

    path: str
    kind: str  # jsonl | text | parquet
    start: int  # jsonl/text: byte offset; parquet: row offset within the row group
    stop: int  # jsonl/text: byte offset (exclusive); parquet: row offset (exclusive)
    first_line: int  # jsonl/text: 1-based line number of the first line; parquet: row group index
    rows: int  # lines (jsonl/text) or rows (parquet) in the chunk


def log_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith(".txt"):
        return "text"
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    raise AuditError(
        f"{path}: unknown log format; use .jsonl (OpenAI requests), .txt (one prompt a line) or .parquet"
    )


def plan_chunks(paths: Sequence[Path], batch_size: int) -> list[Chunk]:
    """The chunks of every log, in file order (a fast byte scan; nothing is parsed here)."""
    if batch_size < 1:
        raise AuditError("--batch-size must be at least 1")
    chunks: list[Chunk] = []
    for path in paths:
        if not path.is_file():
            raise AuditError(f"log file {path} does not exist")
        kind = log_kind(path)
        if kind == "parquet":
            chunks.extend(_parquet_chunks(path, batch_size))
        else:
            chunks.extend(_line_chunks(path, kind, batch_size))
    return chunks


def _line_chunks(path: Path, kind: str, batch_size: int) -> Iterator[Chunk]:
    start = offset = 0
    first_line = line_number = 1
    lines = 0
    with open(path, "rb") as stream:
        for raw in stream:
            offset += len(raw)
            lines += 1
            line_number += 1
            if lines == batch_size:
                yield Chunk(str(path), kind, start, offset, first_line, lines)
                start, first_line, lines = offset, line_number, 0
    if lines:
        yield Chunk(str(path), kind, start, offset, first_line, lines)


def _parquet_chunks(path: Path, batch_size: int) -> Iterator[Chunk]:
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(path).metadata
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        for start in range(0, rows, batch_size):
            stop = min(rows, start + batch_size)
            yield Chunk(str(path), "parquet", start, stop, group, stop - start)


def chunk_requests(chunk: Chunk) -> list[tuple[str, ClassifierInput | None, str | None]]:
    """(location, what the classifier reads, error) for each request of a chunk, in order."""
    out: list[tuple[str, ClassifierInput | None, str | None]] = []
    if chunk.kind == "parquet":
        for index, value in enumerate(_parquet_values(chunk)):
            where = f"{chunk.path}: row group {chunk.first_line}, row {chunk.start + index}"
            try:
                if isinstance(value, list):
                    value = {"messages": value}
                out.append((where, logged_request(value), None))
            except RequestTextError as err:
                out.append((where, None, str(err)))
        return out
    with open(chunk.path, "rb") as stream:
        stream.seek(chunk.start)
        data = stream.read(chunk.stop - chunk.start)
    for index, raw in enumerate(data.splitlines()):
        where = f"{chunk.path}:{chunk.first_line + index}"
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            out.append((where, None, "not valid UTF-8"))
            continue
        try:
            if chunk.kind == "text":
                out.append((where, logged_request(line.rstrip("\r\n")), None))
            else:
                out.append((where, logged_request(json.loads(line)), None))
        except json.JSONDecodeError as err:
            out.append((where, None, f"invalid JSON ({err.msg})"))
        except RequestTextError as err:
            out.append((where, None, str(err)))
    return out


_ROW_GROUP_CACHE: dict[tuple[str, int], list[Any]] = {}


def _parquet_values(chunk: Chunk) -> list[Any]:
    import pyarrow.parquet as pq

    key = (chunk.path, chunk.first_line)
    if key not in _ROW_GROUP_CACHE:
        parquet = pq.ParquetFile(chunk.path)
        names = parquet.schema_arrow.names
        column = next((c for c in PARQUET_TEXT_COLUMNS if c in names), None)
        if column is None:
            raise AuditError(
                f"{chunk.path} has no text column; name one of {', '.join(PARQUET_TEXT_COLUMNS)} (has {names})"
            )
        _ROW_GROUP_CACHE.clear()  # one row group at a time per process
        table = parquet.read_row_group(chunk.first_line, columns=[column])
        _ROW_GROUP_CACHE[key] = table.column(column).to_pylist()
    return _ROW_GROUP_CACHE[key][chunk.start : chunk.stop]


# ---------------------------------------------------------------------------------------------
# Classifying and counting
# ---------------------------------------------------------------------------------------------


@dataclass
class AuditTotals:
    """Integer totals of an audit; `merge` is order-independent, so any engine gets the same result."""

    requests: int = 0
    unreadable: int = 0
    routed: Counter[str] = field(default_factory=Counter)  # requests per served tier
    predicted: Counter[str] = field(default_factory=Counter)  # requests per classifier argmax tier
    input_tokens: Counter[str] = field(default_factory=Counter)  # input tokens per served tier
    escalated: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    token_bins: Counter[int] = field(default_factory=Counter)  # index into TOKEN_BIN_EDGES (+ open bin)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (location, message), the first few

    def merge(self, other: AuditTotals) -> None:
        self.requests += other.requests
        self.unreadable += other.unreadable
        self.escalated += other.escalated
        for name in ("routed", "predicted", "input_tokens", "reasons", "token_bins"):
            getattr(self, name).update(getattr(other, name))
        self.errors = sorted(self.errors + other.errors, key=_location_key)[:MAX_ERRORS_KEPT]

    def to_json(self) -> str:
        values = {
            "requests": self.requests,
            "unreadable": self.unreadable,
            "routed": dict(self.routed),
            "predicted": dict(self.predicted),
            "input_tokens": dict(self.input_tokens),
            "escalated": self.escalated,
            "reasons": dict(self.reasons),
            "token_bins": {str(k): v for k, v in self.token_bins.items()},
            "errors": [list(e) for e in self.errors],
        }
        return json.dumps(values)

    @classmethod
    def from_json(cls, text: str) -> AuditTotals:
        values = json.loads(text)
        return cls(
            requests=values["requests"],
            unreadable=values["unreadable"],
            routed=Counter(values["routed"]),
            predicted=Counter(values["predicted"]),
            input_tokens=Counter(values["input_tokens"]),
            escalated=values["escalated"],
            reasons=Counter(values["reasons"]),
            token_bins=Counter({int(k): v for k, v in values["token_bins"].items()}),
            errors=[tuple(e) for e in values["errors"]],  # type: ignore[misc]
        )


def _location_key(error: tuple[str, str]) -> tuple[str, int]:
    location = error[0]
    head, _, tail = location.rpartition(":")
    return (head, int(tail)) if tail.strip().isdigit() else (location, 0)


def token_bin(tokens: int) -> int:
    for index, edge in enumerate(TOKEN_BIN_EDGES):
        if tokens < edge:
            return index
    return len(TOKEN_BIN_EDGES)


class ChunkAuditor:
    """Loads the classifier and policy once; `__call__(chunk)` returns the chunk's totals."""

    def __init__(self, model_dir: str, policy_file: str, threads: int = 0) -> None:
        from tierwise.core.classifier import TierClassifier

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
        texts = [text for _, text in good]
        probabilities, counts = self.classifier.predict_proba(texts)
        q = self.classifier.manifest.escalation_q
        for text, probs, tokens in zip(texts, probabilities, counts, strict=True):
            decision = self.policy.decide(RoutingInput(text=text.text, request=text), probs, int(tokens), q)
            totals.requests += 1
            totals.routed[decision.tier] += 1
            if decision.predicted_tier is not None:
                totals.predicted[decision.predicted_tier] += 1
            totals.input_tokens[decision.tier] += int(tokens)
            totals.escalated += int(decision.escalated)
            totals.reasons.update(decision.reasons)
            totals.token_bins[token_bin(int(tokens))] += 1
        return totals


ProgressCallback = Callable[[int], None]  # rows just finished


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


def audit_ray(
    chunks: Sequence[Chunk],
    model_dir: Path,
    policy_file: Path,
    progress: ProgressCallback,
    address: str | None = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    startup_seconds: dict[str, float] | None = None,
) -> AuditTotals:
    """The same chunks through Ray Data `map_batches` (a local Ray unless `address` is given).

    On a cluster, the logs and the model folder must be readable at the same paths on every node.
    """
    startup_seconds = {} if startup_seconds is None else startup_seconds
    try:
        import ray
    except ImportError as err:
        raise AuditError("--engine ray needs Ray Data: pip install 'tierwise[audit]'") from err
    started_here = not ray.is_initialized()
    init_started = time.perf_counter()
    if started_here:
        init: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": False,
        }
        if address:
            init["address"] = address
        elif workers:
            init["num_cpus"] = workers * threads_per_worker
        ray.init(**init)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        startup_seconds["ray_init"] = time.perf_counter() - init_started
        cpus = int(ray.available_resources().get("CPU", 1))
        actors = workers or max(1, cpus // threads_per_worker)
        dataset = ray.data.from_items(
            [asdict(c) for c in chunks], override_num_blocks=max(1, min(len(chunks), actors * 4))
        )
        results = dataset.map_batches(
            RayChunkAuditor,
            fn_constructor_kwargs={
                "model_dir": str(Path(model_dir).resolve()),
                "policy_file": str(Path(policy_file).resolve()),
                "threads": threads_per_worker,
            },
            batch_size=1,
            concurrency=actors,
            num_cpus=threads_per_worker,
        )
        totals = AuditTotals()
        for row in results.iter_rows():
            totals.merge(AuditTotals.from_json(row["totals"]))
            progress(int(row["rows"]))
        return totals
    finally:
        if started_here:
            ray.shutdown()


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def tier_cost(policy: Policy, tier_name: str, requests: int, input_tokens: int) -> float:
    tier = next((t for t in policy.tiers if t.name == tier_name), None)
    if tier is None and policy.private_tier is not None and policy.private_tier.name == tier_name:
        tier = policy.private_tier
    tier = tier or policy.tiers[-1]
    output_tokens = requests * policy.expected_output_tokens
    return (input_tokens * tier.input_price_per_million + output_tokens * tier.output_price_per_million) / 1e6


def token_quantile(bins: Mapping[int, int], q: float) -> str:
    """The token-size bin holding quantile q, e.g. '<= 512'."""
    total = sum(bins.values())
    if not total:
        return "n/a"
    seen = 0
    for index in sorted(bins):
        seen += bins[index]
        if seen >= q * total:
            return (
                f"<= {TOKEN_BIN_EDGES[index]}" if index < len(TOKEN_BIN_EDGES) else f"> {TOKEN_BIN_EDGES[-1]}"
            )
    return "n/a"


def summarize(totals: AuditTotals, policy: Policy, period_days: float | None = None) -> dict[str, Any]:
    """Tier mix, sizes, cost all-frontier vs routed and projected savings, from the totals."""
    top = policy.tiers[-1].name
    tiers = [t.name for t in policy.tiers] + ([policy.private_tier.name] if policy.private_tier else [])
    per_tier = {}
    routed_usd = 0.0
    for name in tiers:
        requests = totals.routed.get(name, 0)
        tokens = totals.input_tokens.get(name, 0)
        cost = tier_cost(policy, name, requests, tokens)
        routed_usd += cost
        per_tier[name] = {
            "requests": requests,
            "share": requests / totals.requests if totals.requests else 0.0,
            "input_tokens": tokens,
            "cost_usd": cost,
        }
    all_tokens = sum(totals.input_tokens.values())
    frontier_usd = tier_cost(policy, top, totals.requests, all_tokens)
    savings = frontier_usd - routed_usd
    summary: dict[str, Any] = {
        "requests": totals.requests,
        "unreadable": totals.unreadable,
        "errors": [list(e) for e in totals.errors],
        "tier_mix": per_tier,
        "predicted_mix": {t: totals.predicted.get(t, 0) for t in policy.tier_names},
        "escalated": totals.escalated,
        "reasons": dict(sorted(totals.reasons.items())),
        "input_tokens": all_tokens,
        "mean_input_tokens": all_tokens / totals.requests if totals.requests else 0.0,
        "token_histogram": {
            (f"< {TOKEN_BIN_EDGES[i]}" if i < len(TOKEN_BIN_EDGES) else f">= {TOKEN_BIN_EDGES[-1]}"): c
            for i, c in sorted(totals.token_bins.items())
        },
        "token_p50": token_quantile(totals.token_bins, 0.5),
        "token_p90": token_quantile(totals.token_bins, 0.9),
        "token_p99": token_quantile(totals.token_bins, 0.99),
        "all_frontier_usd": frontier_usd,
        "routed_usd": routed_usd,
        "savings_usd": savings,
        "savings_share": savings / frontier_usd if frontier_usd else 0.0,
        "savings_per_million_requests_usd": savings / totals.requests * 1e6 if totals.requests else 0.0,
        "frontier_tier": top,
        "expected_output_tokens": policy.expected_output_tokens,
    }
    if period_days:
        summary["period_days"] = period_days
        summary["projected_monthly_savings_usd"] = savings / period_days * 30.0
    return summary


def render_audit_markdown(summary: dict[str, Any], meta: dict[str, Any], plots: Sequence[str] = ()) -> str:
    lines = [
        "# tierwise traffic audit",
        "",
        f"Logs: {', '.join(meta['logs'])}. Model `{meta['model_version']}`, policy `{meta['policy']}`, "
        f"engine {meta['engine']}: {summary['requests']} requests in {meta['seconds']:.1f} s "
        f"({meta['requests_per_second']:.0f} requests/s"
        + (
            f", of which Ray start-up {meta['ray_init_seconds']:.1f} s"
            if meta.get("ray_init_seconds")
            else ""
        )
        + f"); {summary['unreadable']} unreadable row(s) skipped.",
        "",
        "## What routing would save",
        "",
        f"- All to {summary['frontier_tier']}: **{summary['all_frontier_usd']:.2f} USD**",
        f"- Routed by tierwise: **{summary['routed_usd']:.2f} USD**",
        f"- Savings: **{summary['savings_usd']:.2f} USD ({100 * summary['savings_share']:.1f}%)**, "
        f"{summary['savings_per_million_requests_usd']:.0f} USD per million requests",
    ]
    if "projected_monthly_savings_usd" in summary:
        lines.append(
            f"- Projected: **{summary['projected_monthly_savings_usd']:.2f} USD per 30 days** "
            f"(the logs cover {summary['period_days']:g} days)"
        )
    lines += [
        "",
        f"Costs use the policy's list prices, each request's input tokens and {summary['expected_output_tokens']} "
        "expected output tokens (completions are not known at routing time).",
        "",
        "## Tier mix",
        "",
        "| tier | requests | share | input tokens | cost (USD) |",
        "|---|---:|---:|---:|---:|",
    ]
    for tier, entry in summary["tier_mix"].items():
        lines.append(
            f"| {tier} | {entry['requests']} | {100 * entry['share']:.1f}% | {entry['input_tokens']} | "
            f"{entry['cost_usd']:.4f} |"
        )
    lines += [
        "",
        f"Escalated above the classifier's most likely tier: {summary['escalated']}; reasons: "
        + (", ".join(f"{k} {v}" for k, v in summary["reasons"].items()) or "none")
        + ".",
        "",
        "## Request sizes (input tokens)",
        "",
        f"Mean {summary['mean_input_tokens']:.0f} tokens; median {summary['token_p50']}, p90 "
        f"{summary['token_p90']}, p99 {summary['token_p99']}.",
        "",
        "| size | requests |",
        "|---|---:|",
        *(f"| {size} | {count} |" for size, count in summary["token_histogram"].items()),
    ]
    if summary["errors"]:
        lines += [
            "",
            "## Unreadable rows (first ones)",
            "",
            *(f"- {where}: {msg}" for where, msg in summary["errors"]),
        ]
    if plots:
        lines += ["", "## Plots", "", *(f"![{Path(p).stem}]({Path(p).name})" for p in plots)]
    return "\n".join(lines) + "\n"


def plot_audit(summary: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    mix = summary["tier_mix"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].bar(list(mix), [e["requests"] for e in mix.values()])
    axes[0].set_title("tier mix (requests)")
    axes[1].bar(
        ["all " + summary["frontier_tier"], "routed"],
        [summary["all_frontier_usd"], summary["routed_usd"]],
        color=["tab:red", "tab:green"],
    )
    axes[1].set_title(f"cost (USD): saves {100 * summary['savings_share']:.1f}%")
    fig.tight_layout()
    paths.append(out_dir / "audit_mix_cost.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    histogram = summary["token_histogram"]
    ax.bar(list(histogram), list(histogram.values()))
    ax.set_title("request size (input tokens)")
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    paths.append(out_dir / "audit_sizes.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)
    return paths


def run_audit(
    logs: Sequence[Path],
    model_dir: Path,
    policy_file: Path,
    engine: str = "local",
    batch_size: int = 256,
    threads: int = 0,
    ray_address: str | None = None,
    workers: int | None = None,
    period_days: float | None = None,
    show_progress: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(summary, meta) for the logs with the chosen engine."""
    chunks = plan_chunks(logs, batch_size)
    total_rows = sum(c.rows for c in chunks)
    bar = _progress_bar(total_rows, show_progress)
    started = time.perf_counter()
    startup: dict[str, float] = {}
    try:
        if engine == "ray":
            totals = audit_ray(
                chunks, model_dir, policy_file, bar.update, ray_address, workers, startup_seconds=startup
            )
        elif engine == "local":
            totals = audit_local(chunks, model_dir, policy_file, threads, bar.update)
        else:
            raise AuditError(f"--engine must be local or ray, got {engine!r}")
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    policy = load_policy(policy_file)
    summary = summarize(totals, policy, period_days)
    from tierwise.core.model_folder import load_manifest

    meta = {
        "logs": [str(p) for p in logs],
        "model_version": load_manifest(model_dir).version,
        "policy": str(policy_file),
        "engine": engine,
        "batch_size": batch_size,
        "seconds": seconds,
        "requests_per_second": (totals.requests + totals.unreadable) / seconds if seconds > 0 else 0.0,
        "ray_init_seconds": startup.get("ray_init"),
    }
    return summary, meta


def write_audit(summary: dict[str, Any], meta: dict[str, Any], out_dir: Path, plots: bool = True) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_paths = [str(p) for p in plot_audit(summary, out_dir)] if plots else []
    (out_dir / "audit.json").write_text(json.dumps({"summary": summary, "meta": meta}, indent=1) + "\n")
    path = out_dir / "audit.md"
    path.write_text(render_audit_markdown(summary, meta, plot_paths), encoding="utf-8")
    return path


class _NoProgress:
    def update(self, _: int) -> None:
        return None

    def close(self) -> None:
        return None


def _progress_bar(total: int, show: bool) -> Any:
    if not show:
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoProgress()
    return tqdm(total=total, unit="req", desc="audit", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)


def main_audit(args: Any) -> int:
    try:
        summary, meta = run_audit(
            args.logs,
            args.model,
            args.policy,
            engine=args.engine,
            batch_size=args.batch_size,
            threads=args.threads,
            ray_address=args.ray_address,
            workers=args.workers,
            period_days=args.period_days,
            show_progress=not args.no_progress,
        )
    except AuditError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    path = write_audit(summary, meta, args.out, plots=not args.no_plots)
    size = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    sys.stderr.write(
        f"audited {summary['requests']} requests ({summary['unreadable']} unreadable) in {meta['seconds']:.1f} s "
        f"({meta['requests_per_second']:.0f}/s, engine {meta['engine']}): routing saves "
        f"{100 * summary['savings_share']:.1f}% vs all-{summary['frontier_tier']}; report {path} "
        f"({size / 1024:.0f} KiB)\n"
    )
    return 0 if summary["requests"] else 1
