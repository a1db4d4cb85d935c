"""Load: N requests at C keep-alive clients against a W-worker server; errors, latency, RSS growth."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tools.harness import KeepAliveClosed, KeepAliveConnection, RssSampler, percentile, raw_request
from tools.reliability.fixtures import VERSION_RE, request_bodies, start_server
from tools.reliability.report import CaseResult


@dataclass
class LoadStats:
    ok: int = 0
    errors: int = 0
    timeouts: int = 0
    upward: int = 0
    estimated: int = 0  # answered by the model folder's estimator (the encoder could not in time)
    retried: int = 0  # sent again after the server closed an idle keep-alive connection
    latencies_ms: list[float] = field(default_factory=list)
    versions: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, version)
    error_kinds: Counter[str] = field(default_factory=Counter)

    @property
    def tried(self) -> int:
        return self.ok + self.errors + self.timeouts

    @property
    def failed(self) -> int:
        return self.errors + self.timeouts

    def latency_text(self) -> str:
        return (
            f"p50 {percentile(self.latencies_ms, 50):.1f} ms, p99 {percentile(self.latencies_ms, 99):.1f} ms"
        )


@dataclass
class RequestBudget:
    """Whether a client may send one more request: `total` requests in all (None: no count), or until
    `stop` and then on while `until(stats)` is false, never past `hard_stop`."""

    stats: LoadStats
    total: int | None
    stop: float
    hard_stop: float
    until: Callable[[LoadStats], bool] | None

    def take(self) -> bool:
        now = time.perf_counter()
        if now >= self.hard_stop or (now >= self.stop and (self.until is None or self.until(self.stats))):
            return False
        if self.total is None:
            return True
        if self.total == 0:
            return False
        self.total -= 1
        return True


async def send_with_retry(
    connection: KeepAliveConnection, request: bytes, timeout: float, stats: LoadStats
) -> tuple[int, bytes]:
    """Send once more on a new connection when the server closed the reused one first (counted)."""
    for attempt in (1, 2):
        if not connection.is_open:
            await asyncio.wait_for(connection.open(), timeout)
        try:
            return await asyncio.wait_for(connection.send(request), timeout)
        except KeepAliveClosed:
            connection.close()
            if attempt == 2:
                raise
            stats.retried += 1
    raise AssertionError("unreachable: the second attempt returns or raises")


def record_answer(stats: LoadStats, status: int, body: bytes, latency_ms: float, at: float) -> None:
    """Count one response: ok (with how it was decided and which model answered) or an HTTP error."""
    if status != 200:
        stats.errors += 1
        stats.error_kinds[f"http {status}"] += 1
        return
    stats.ok += 1
    stats.latencies_ms.append(latency_ms)
    if b"classifier_unavailable" in body:
        stats.upward += 1
    elif b'"decided_by":"estimator"' in body:
        stats.estimated += 1
    match = VERSION_RE.search(body)
    if match:
        stats.versions.append((at, match.group(1).decode()))


async def load_client(
    port: int,
    requests: Sequence[bytes],
    offset: int,
    step: int,
    budget: RequestBudget,
    timeout: float,
    started: float,
) -> None:
    """One keep-alive client sending every `step`-th request from `offset` while the budget lasts."""
    stats = budget.stats
    connection = KeepAliveConnection(port)
    index = offset
    while budget.take():
        request = requests[index % len(requests)]
        index += step
        begun = time.perf_counter()
        try:
            status, body = await send_with_retry(connection, request, timeout, stats)
        except TimeoutError:
            stats.timeouts += 1
            stats.error_kinds["timeout"] += 1
        except (OSError, asyncio.IncompleteReadError, ValueError) as err:
            stats.errors += 1
            stats.error_kinds[type(err).__name__] += 1
        else:
            finished = time.perf_counter()
            record_answer(stats, status, body, (finished - begun) * 1000, finished - started)
            continue
        connection.close()  # after an error or timeout: a fresh connection, after a pause
        await asyncio.sleep(0.01)
    connection.close()


async def drive_load(
    port: int,
    requests: Sequence[bytes],
    concurrency: int,
    total: int | None = None,
    seconds: float | None = None,
    timeout: float = 10.0,
    until: Callable[[LoadStats], bool] | None = None,
    max_seconds: float = 120.0,
) -> LoadStats:
    """Send `total` requests, or run for `seconds` (and then on until `until(stats)` or
    `max_seconds`), over `concurrency` keep-alive connections.

    Like HTTP/1.1 clients do, a request whose reused keep-alive connection the server closed before
    any response byte (a worker stopping between two requests) is sent once more on a new
    connection; those are counted in `retried`, and a second failure counts as an error.
    """
    stats = LoadStats()
    started = time.perf_counter()
    stop = started + seconds if seconds is not None else float("inf")
    budget = RequestBudget(stats, total, stop, started + max_seconds, until)
    await asyncio.gather(
        *(load_client(port, requests, i, concurrency, budget, timeout, started) for i in range(concurrency))
    )
    return stats


def load_case(
    model_dir: Path,
    work_dir: Path,
    prompts: Sequence[str],
    requests: int = 20_000,
    concurrency: int = 64,
    workers: int = 2,
    max_growth_percent: float = 10.0,
    warm_up_requests: int = 200,
    server_settings: dict[str, object] | None = None,
) -> tuple[CaseResult, str, str]:
    """(result, server log, canary) for `requests` requests against a `workers`-worker server."""
    bodies, canary = request_bodies(prompts)
    server = start_server(
        model_dir,
        work_dir / "load-server.log",
        workers=workers,
        **{"log_level": "info", **(server_settings or {})},
    )
    problems: list[str] = []
    try:
        server.wait_until_ready(workers=workers)
        raw = [raw_request(server.port, "/classify", body) for body in bodies]
        asyncio.run(drive_load(server.port, raw, concurrency, total=warm_up_requests))
        with RssSampler(server.process.pid) as sampler:
            began = time.perf_counter()
            stats = asyncio.run(drive_load(server.port, raw, concurrency, total=requests))
            seconds = time.perf_counter() - began
        first, last = sampler.quarters_mib()
    finally:
        exit_code = server.stop()
    growth = (last - first) / first * 100 if first == first and first > 0 else float("nan")
    failures = stats.failed
    if not abs(growth) <= max_growth_percent:  # also fails on NaN (too few samples)
        failures += 1
        problems.append(f"RSS grew {growth:+.1f}% (limit {max_growth_percent:g}%)")
    if stats.tried != requests:
        failures += 1
        problems.append(f"{stats.tried} of {requests} requests were sent")
    problems += [f"{kind}: {count}" for kind, count in stats.error_kinds.items()]
    figures = (
        f"{workers} workers, {concurrency} clients; errors {stats.errors}, timeouts {stats.timeouts}, "
        f"keep-alive closes retried {stats.retried}; "
        f"{stats.latency_text()}; {stats.tried / seconds:.0f} req/s; estimated {stats.estimated}; upward {stats.upward}; "
        f"worker RSS first→last quarter {first:.0f}→{last:.0f} MiB ({growth:+.1f}%); exit code {exit_code}"
    )
    return CaseResult("load", stats.tried, failures, figures, problems), server.log_text(), canary
