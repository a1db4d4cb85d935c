"""The load `tools/capacity_bench.py` drives one served model folder with, and what it counts.

Closed loop (N clients on keep-alive connections, each waiting for its answer), open loop (a fixed
arrival rate from a pool of connections; latency counts from the scheduled send, so a slow router
does not slow the offered load, as gateways do not) and the unloaded pass (every body once, one at a
time). Each level records, per answer, how it was decided (`decided_by`) and its tier.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tools.harness import KeepAliveConnection

MAX_OPEN_CONNECTIONS = 512


@dataclass
class Level:
    """One load level: `clients` (closed loop) or `rate` req/s (open loop)."""

    mode: str  # "closed" or "open"
    load: float  # clients, or requests per second
    sent: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    decided_by: Counter[str] = field(default_factory=Counter)
    tiers: Counter[str] = field(default_factory=Counter)
    routed: list[tuple[int, str, str]] = field(default_factory=list)  # (body index, decided_by, tier)
    failures: Counter[str] = field(default_factory=Counter)  # HTTP status or exception, per error

    @property
    def answered(self) -> int:
        return sum(self.decided_by.values())

    @property
    def rate(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0

    def share(self, decided_by: str) -> float:
        return self.decided_by[decided_by] / self.answered if self.answered else 0.0

    def record(self, status: int, body: bytes, latency_ms: float, index: int = -1) -> None:
        """One answer to the body at `index` of the request list."""
        self.latencies_ms.append(latency_ms)
        if status != 200:
            self.fail(f"HTTP {status}")
            return
        answer = json.loads(body)
        # A service older than decided_by: a classifier_unavailable answer was the fallback.
        default = "fallback" if "classifier_unavailable" in answer.get("reasons", ()) else "encoder"
        decided_by = answer.get("decided_by", default)
        self.decided_by[decided_by] += 1
        self.tiers[answer["tier"]] += 1
        self.routed.append((index, decided_by, answer["tier"]))

    def fail(self, kind: str) -> None:
        self.errors += 1
        self.failures[kind] += 1

    def describe_errors(self) -> str:
        """`0`, or the count and what they were: `3 (HTTP 503 x2, TimeoutError x1)`."""
        if not self.errors:
            return "0"
        return f"{self.errors} ({', '.join(f'{kind} x{n}' for kind, n in self.failures.most_common())})"


def read_request_bodies(path: Path) -> list[bytes]:
    """POST /classify bodies from `make bench-requests`; a missing file is an error, not a fallback."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: run `make bench-requests` (it needs `make data`) to build the realistic "
            "request bodies, or pass --requests."
        )
    with open(path, encoding="utf-8") as f:
        return [json.dumps(json.loads(line)["body"]).encode() for line in f if line.strip()]


async def closed_client(port: int, requests: list[bytes], start: int, stop: float, level: Level) -> None:
    connection = KeepAliveConnection(port)
    await connection.open()
    index = start
    try:
        while time.perf_counter() < stop:
            body_index = index % len(requests)
            index += 1
            level.sent += 1
            sent = time.perf_counter()
            status, body = await connection.send(requests[body_index])
            level.record(status, body, (time.perf_counter() - sent) * 1000, body_index)
    except (OSError, asyncio.IncompleteReadError) as err:
        level.fail(type(err).__name__)
        print(f"  client error: {err}", file=sys.stderr)
    finally:
        connection.close()


async def closed_loop(port: int, requests: list[bytes], clients: int, seconds: float) -> Level:
    level = Level("closed", clients)
    started = time.perf_counter()
    stop = started + seconds
    step = max(1, len(requests) // clients)
    await asyncio.gather(*(closed_client(port, requests, i * step, stop, level) for i in range(clients)))
    level.seconds = time.perf_counter() - started
    return level


class ConnectionPool:
    """Idle keep-alive connections; a send with none idle opens another (a gateway does not wait)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[KeepAliveConnection] = []
        self.opened = 0

    async def get(self) -> KeepAliveConnection:
        if self.idle:
            return self.idle.pop()
        if self.opened >= MAX_OPEN_CONNECTIONS:
            raise OSError(f"more than {MAX_OPEN_CONNECTIONS} requests in flight")
        self.opened += 1
        connection = KeepAliveConnection(self.port)
        await connection.open()
        return connection

    def put(self, connection: KeepAliveConnection) -> None:
        self.idle.append(connection)

    def close(self) -> None:
        for connection in self.idle:
            connection.close()


async def open_request(
    pool: ConnectionPool, requests: list[bytes], body_index: int, scheduled: float, level: Level
) -> None:
    try:
        connection = await pool.get()
    except OSError:
        level.fail(f"over {MAX_OPEN_CONNECTIONS} in flight (load generator cap)")
        return
    try:
        status, body = await connection.send(requests[body_index])
    except (OSError, asyncio.IncompleteReadError) as err:
        level.fail(type(err).__name__)
        connection.close()
        pool.opened -= 1
        return
    latency_ms = (time.perf_counter() - scheduled) * 1000  # from the scheduled send
    level.record(status, body, latency_ms, body_index)
    pool.put(connection)


async def open_loop(port: int, requests: list[bytes], rate: float, seconds: float) -> Level:
    level = Level("open", rate)
    pool = ConnectionPool(port)
    started = time.perf_counter()
    tasks = []
    count = int(rate * seconds)
    for i in range(count):
        scheduled = started + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        level.sent += 1
        tasks.append(asyncio.create_task(open_request(pool, requests, i % len(requests), scheduled, level)))
    await asyncio.gather(*tasks)
    level.seconds = max(seconds, time.perf_counter() - started)
    pool.close()
    return level


async def unloaded_pass(port: int, requests: list[bytes]) -> Level:
    """Every body once, one at a time: the tiers an unloaded service routes them to."""
    level = Level("unloaded", 1)
    connection = KeepAliveConnection(port)
    await connection.open()
    started = time.perf_counter()
    try:
        for index, request in enumerate(requests):
            level.sent += 1
            sent = time.perf_counter()
            status, body = await connection.send(request)
            level.record(status, body, (time.perf_counter() - sent) * 1000, index)
    finally:
        connection.close()
    level.seconds = time.perf_counter() - started
    return level
