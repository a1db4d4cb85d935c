"""SIGTERM under load: requests in flight complete, new ones are refused cleanly, exit code 0."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierwise.service.settings import Settings

from tools.doubles import ControllableClassifier
from tools.harness import ServedProcess, raw_request, read_response
from tools.reliability.fixtures import request_bodies, start_server
from tools.reliability.report import CaseResult


async def _one_request(port: int, request: bytes, timeout: float) -> tuple[str, float]:
    """('ok' | 'refused' | 'broken: ...', seconds when it ended). Refused: no response byte came."""
    writer = None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        status, _ = await asyncio.wait_for(read_response(reader), timeout)
        return (
            "ok" if status == 200 else "refused" if status == 503 else f"broken: http {status}"
        ), time.perf_counter()
    except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
        return "refused", time.perf_counter()
    except asyncio.IncompleteReadError as err:
        return ("refused" if not err.partial else "broken: partial response"), time.perf_counter()
    except TimeoutError:
        return "broken: timeout", time.perf_counter()
    except OSError as err:
        return f"broken: {type(err).__name__}", time.perf_counter()
    finally:
        if writer is not None:
            writer.close()


@dataclass
class DrainOutcomes:
    """How each request of a drain run ended ('ok' | 'refused' | 'broken: ...', when), and when the
    signal went."""

    long: list[tuple[str, float]]
    short: list[tuple[str, float]]
    signalled: float


async def send_and_signal(
    server: ServedProcess,
    long_raw: bytes,
    short_raw: list[bytes],
    long_requests: int,
    concurrency: int,
    signal_after: float,
) -> DrainOutcomes:
    """`long_requests` long calls and `concurrency` clients of short ones; SIGTERM after `signal_after`
    s; the short clients go on until the server is gone (or 30 s)."""
    stop = time.perf_counter() + 30.0
    short: list[tuple[str, float]] = []

    async def short_client(offset: int) -> None:
        index = offset
        while time.perf_counter() < stop:
            outcome = await _one_request(server.port, short_raw[index % len(short_raw)], 30.0)
            short.append(outcome)
            index += 1
            if outcome[0] == "refused":
                await asyncio.sleep(0.05)
                if server.process.poll() is not None:
                    return

    shorts = [asyncio.create_task(short_client(i)) for i in range(concurrency)]
    longs = [asyncio.create_task(_one_request(server.port, long_raw, 60.0)) for _ in range(long_requests)]
    await asyncio.sleep(signal_after)
    signalled = time.perf_counter()
    server.process.send_signal(signal.SIGTERM)
    long_outcomes = await asyncio.gather(*longs)
    await asyncio.gather(*shorts)
    return DrainOutcomes(list(long_outcomes), short, signalled)


def drain_verdict(
    outcomes: DrainOutcomes, workers: int, long_requests: int, exit_code: int, drained: float
) -> CaseResult:
    problems = []
    in_flight = sum(1 for outcome, ended in outcomes.long if outcome == "ok" and ended > outcomes.signalled)
    long_failed = [outcome for outcome, _ in outcomes.long if outcome != "ok"]
    if long_failed:
        problems.append(f"long requests in flight: {Counter(long_failed)}")
    if in_flight == 0:
        problems.append("no long request was still in flight at SIGTERM; raise long_body or signal sooner")
    short_counts = Counter(outcome for outcome, _ in outcomes.short)
    broken = {k: v for k, v in short_counts.items() if k.startswith("broken")}
    if broken:
        problems.append(f"short requests: {broken}")
    clean_exit = exit_code in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after a graceful shutdown
    if not clean_exit:
        problems.append(f"exit code {exit_code}")
    failures = len(long_failed) + sum(broken.values()) + (not clean_exit) + (in_flight == 0)
    figures = (
        f"{workers} worker(s): {in_flight}/{long_requests} long calls in flight at SIGTERM completed 200; "
        f"short requests ok {short_counts.get('ok', 0)}, refused cleanly {short_counts.get('refused', 0)}, "
        f"broken {sum(broken.values())}; exit code {exit_code} after {drained:.1f} s"
    )
    tried = len(outcomes.long) + len(outcomes.short)
    return CaseResult("SIGTERM under load (drain)", tried, failures, figures, problems)


def drain_case(
    model_dir: Path,
    work_dir: Path,
    prompts: Sequence[str],
    workers: int = 2,
    concurrency: int = 16,
    long_requests: int = 4,
    long_body: dict[str, Any] | None = None,
    command: Sequence[str] | None = None,
    signal_after: float = 0.2,
    **settings: object,
) -> CaseResult:
    """SIGTERM while `long_requests` long calls are in flight and `concurrency` clients keep sending.

    Passes when every long call sent before the signal completes with 200, every other request
    either completes or is refused cleanly (connection refused/closed before any response byte, or
    a 503), and the process exits 0.
    """
    long_body = long_body or {"items": [{"text": " ".join(prompts[:20])[:4000]} for _ in range(256)]}
    server = start_server(
        model_dir, work_dir / "drain.log", command, workers=workers, log_level="warning", **settings
    )
    try:
        server.wait_until_ready(workers=workers)
        path = "/classify/batch" if "items" in long_body else "/classify"
        long_raw = raw_request(server.port, path, json.dumps(long_body).encode())
        bodies, _ = request_bodies(prompts, count=50)
        short_raw = [raw_request(server.port, "/classify", body) for body in bodies]
        outcomes = asyncio.run(
            send_and_signal(server, long_raw, short_raw, long_requests, concurrency, signal_after)
        )
        exit_code = server.process.wait(timeout=60)
        drained = time.perf_counter() - outcomes.signalled
    finally:
        if server.process.poll() is None:
            server.stop()
    return drain_verdict(outcomes, workers, long_requests, exit_code, drained)


def serve_slow_classifier(delay_ms: float) -> None:
    """The service (TIERWISE_* settings, one process) with a classifier taking `delay_ms` per call:
    the server of the short drain test, whose requests must still be in flight at SIGTERM."""
    import uvicorn
    from tierwise.service.app import create_app
    from tierwise.service.classifier import load_tier_classifier
    from tierwise.service.logs import configure_logging, uvicorn_log_config

    settings = Settings()

    def slow_factory(factory_settings: Settings) -> ControllableClassifier:
        slow = ControllableClassifier(load_tier_classifier(factory_settings))
        slow.mode, slow.sleep_seconds = "sleep", delay_ms / 1000
        return slow

    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings, slow_factory),
        host=settings.host,
        port=settings.port,
        log_config=uvicorn_log_config(settings.log_level),
        access_log=False,
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
    )
