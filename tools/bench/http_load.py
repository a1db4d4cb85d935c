"""Closed-loop HTTP load on POST /classify: keep-alive clients for a fixed time per level."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tools.harness import KeepAliveConnection, memory_kib, percentile, raw_request, served_service


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


async def client_loop(
    port: int, requests: list[bytes], stop: float, measure_from: float, row: LoadRow
) -> None:
    connection = KeepAliveConnection(port)
    index = random.randrange(len(requests))
    while time.perf_counter() < stop:
        try:
            if not connection.is_open:  # connecting is not part of a request's latency
                await connection.open()
            started = time.perf_counter()
            status, body = await connection.send(requests[index % len(requests)])
            index += 1
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
            connection.close()
            await asyncio.sleep(0.01)
    connection.close()


async def drive(port: int, bodies: list[bytes], concurrency: int, seconds: float, warm_up: float) -> LoadRow:
    requests = [raw_request(port, "/classify", body) for body in bodies]
    row = LoadRow("", concurrency)
    start = time.perf_counter()
    measure_from = start + warm_up
    stop = measure_from + seconds
    await asyncio.gather(*(client_loop(port, requests, stop, measure_from, row) for _ in range(concurrency)))
    row.seconds = max(1e-9, min(time.perf_counter(), stop) - measure_from)
    return row


@dataclass
class ServerRun:
    name: str
    rows: list[LoadRow]
    rss_mib: float
    peak_rss_mib: float


def run_server_load(
    name: str,
    command: Sequence[str],
    model_dir: Path,
    settings: dict[str, object],
    log_path: Path,
    bodies: list[bytes],
    levels: Sequence[int],
    seconds: float,
    warm_up: float,
) -> ServerRun:
    """`command` serving `model_dir` with `settings` (and the caller's TIERWISE_* ones), driven at each
    level in turn; the RSS after the load."""
    with served_service(model_dir, log_path, command, inherit_settings=True, **settings) as server:
        rows = []
        for concurrency in levels:
            row = asyncio.run(drive(server.port, bodies, concurrency, seconds, warm_up))
            row.server = name
            rows.append(row)
            p50 = percentile(row.latencies_ms, 50)
            print(f"  {name}: {concurrency} clients: {row.rate:.0f} req/s, p50 {p50:.1f} ms", file=sys.stderr)
        rss, peak = memory_kib(server.pid)
        return ServerRun(name, rows, rss / 1024, peak / 1024)
