"""`make reliability`: fuzz, load, start-up faults, hot reload, hangs, SIGTERM drain and security.

    python -m tools.reliability [--model-dir models/default] [--fuzz-cases 1000] [--requests 20000]
        [--concurrency 64] [--workers 2] [--out runs/reliability.md]

Each check returns a `CaseResult` (case, tried, failures, figures); the runner prints a markdown
table and exits 1 when any case has failures. `tests/tools/test_reliability_short.py` runs the
same functions on the tiny test model with small numbers, inside the normal `make test`.

- fuzz: schemathesis against the app's own OpenAPI schema, in-process (ASGI, no network);
- load: N requests at C keep-alive clients on loopback against `python -m tierwise.service` (as `make serve`)
  with W uvicorn workers; errors, timeouts, p50/p99, and the workers' RSS (first vs last quarter);
- start-up faults: a missing folder, a corrupt model.onnx, a manifest that does not match the model:
  the process must exit non-zero without ever answering /readyz 200, and log what to do;
- hot reload under load: swap the model folder (a symlink) and SIGHUP the server (or call
  POST /admin/reload): no failed request, `model_version` changes;
- metrics: one scrape of a multi-worker server counts every worker's requests;
- 413: 2 MiB bodies sent fast, slowly, kept alive and chunked on raw sockets all read a 413;
- admin reload across workers: POST /admin/reload to one worker reaches all of them;
- decision log on PostgreSQL: a throwaway cluster, migrations, two workers under load, feedback, report;
- hang / crash: a classifier that hangs or raises still gets answers, upward, within the deadline;
- SIGTERM under load: requests in flight complete, new ones are refused cleanly, exit code 0;
- security: API keys and the admin token, prompt text absent from logs, no unsafe deserialisation
  in serving/, dependencies pinned.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tierwise.core.estimator import ESTIMATOR_FILE, estimator_for
from tierwise.core.model_folder import MANIFEST_FILE, ONNX_FILE, TOKENIZER_FILE, load_manifest
from tierwise.service.settings import Settings

from tools.bench import (
    DEFAULT_PROMPTS,
    FALLBACK_PROMPTS,
    free_port,
    percentile,
    read_prompts,
    read_response,
)
from tools.harness import REPO_DIR, SERVING_DIR

LOCK_FILE = REPO_DIR / "tests" / "requirements-lock.txt"
VERSION_RE = re.compile(rb'"model_version":\s*"([^"]*)"')
CANARY_PREFIX = "tierwise-canary-"
# Source patterns that would deserialise executable objects (built by joining, so this file stays clean).
UNSAFE_LOADERS = tuple("".join(parts) for parts in (("pic", "kle"), ("job", "lib"), ("torch", ".load")))


@dataclass
class CaseResult:
    case: str
    tried: int
    failures: int
    figures: str
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.failures == 0

    def __str__(self) -> str:
        details = "; ".join(self.problems[:5])
        return f"{self.case}: {self.tried} tried, {self.failures} failed; {self.figures}" + (
            f" [{details}]" if details else ""
        )


def in_process_settings(model_dir: Path, **overrides: Any) -> Settings:
    """Settings for an in-process app: one onnxruntime thread, no decision log on disk."""
    values: dict[str, Any] = {"model_dir": model_dir, "onnx_threads": 1, "record_decisions": False}
    values.update(overrides)
    return Settings(**values)


# -- model folders ---------------------------------------------------------------------------------


def variant_folder(source: Path, target: Path, manifest_changes: dict[str, Any] | None = None) -> Path:
    """A model folder whose large files are symlinks to `source`'s and whose manifest is edited."""
    target.mkdir(parents=True, exist_ok=True)
    for name in (ONNX_FILE, TOKENIZER_FILE, ESTIMATOR_FILE):
        if (source / name).is_file():
            (target / name).symlink_to((source / name).resolve())
    manifest = json.loads((source / MANIFEST_FILE).read_text(encoding="utf-8"))
    manifest.update(manifest_changes or {})
    (target / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return target


def corrupt_model_folder(source: Path, target: Path) -> Path:
    """A copy of the folder whose model.onnx is the first kilobyte of the real one plus junk."""
    variant_folder(source, target)
    (target / ONNX_FILE).unlink()
    with open(source / ONNX_FILE, "rb") as f:
        head = f.read(1024)
    (target / ONNX_FILE).write_bytes(head + b"\x00not an onnx graph\xff" * 64)
    return target


def mismatched_model_folder(source: Path, target: Path) -> Path:
    """A folder whose manifest names one tier more than the model has outputs."""
    manifest = json.loads((source / MANIFEST_FILE).read_text(encoding="utf-8"))
    return variant_folder(source, target, {"tiers": [*manifest["tiers"], "ultra"]})


def point_symlink(link: Path, target: Path) -> None:
    """Make `link` point at `target` atomically (rename over the old link)."""
    staging = link.with_name(f".{link.name}.{uuid.uuid4().hex[:8]}")
    staging.symlink_to(target)
    os.replace(staging, link)


# -- fuzz ------------------------------------------------------------------------------------------


def fuzz_app(
    app: Any,
    cases_per_operation: int,
    headers: dict[str, str] | None = None,
    skip_paths: Sequence[str] = (),
) -> CaseResult:
    """Schemathesis cases (positive and negative) for every operation of the app's OpenAPI schema.

    The app's lifespan runs first (so the model is loaded); each case is then one in-process ASGI
    call. A failure is a 5xx, an undocumented status code or content type, or a body that does not
    match its response schema. Build the app with `micro_batching=False`: each case is its own
    event loop, and the micro-batcher lives in the lifespan's loop.
    """
    import schemathesis
    from fastapi.testclient import TestClient
    from hypothesis import HealthCheck, Phase, given
    from hypothesis import settings as hypothesis_settings
    from schemathesis import GenerationMode
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    tried = 0
    statuses: Counter[int] = Counter()
    problems: list[str] = []
    failing_cases = 0
    operations = 0

    def case_runner(operation: Any, mode: Any) -> Callable[[], None]:
        @hypothesis_settings(
            max_examples=cases_per_operation,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run_case(case: Any) -> None:
            nonlocal tried, failing_cases
            tried += 1
            response = case.call(headers=headers)
            statuses[response.status_code] += 1
            try:
                case.validate_response(response, checks=checks, headers=headers)
            except (Exception, BaseExceptionGroup) as err:  # a FailureGroup: one entry per failed check
                failing_cases += 1
                text = str(err).strip()
                first_line = text.splitlines()[0] if text else type(err).__name__
                problems.append(f"{operation.label} ({mode.value}) -> {response.status_code}: {first_line}")

        return run_case

    with TestClient(app):
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.path in skip_paths:
                continue
            operations += 1
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    case_runner(operation, mode)()
                except Exception as err:  # e.g. an operation with nothing to make negative
                    if "unsatisf" not in f"{type(err).__name__} {err}".lower():
                        problems.append(f"{operation.label} ({mode.value}): {type(err).__name__}: {err}")
                        failing_cases += 1
    server_errors = sum(count for status, count in statuses.items() if status >= 500)
    status_text = ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))
    skipped = f"; skipped {', '.join(skip_paths)}" if skip_paths else ""
    return CaseResult(
        f"fuzz (schemathesis, in-process ASGI){skipped}",
        tried,
        failing_cases,
        f"{operations} operations; 5xx: {server_errors}; statuses {status_text}",
        problems,
    )


# -- a server process -------------------------------------------------------------------------------


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait, and the exit code (SIGKILL after `timeout`, reported as -9).

        Workers still running once the main process has gone (a worker stuck after a failed
        start-up outlives a killed main process) are killed too, so no server is left behind.
        """
        workers = [pid for pid in worker_pids(self.process.pid) if pid != self.process.pid]
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        marker = f"TIERWISE_PORT={self.port}".encode()
        for pid in workers:
            with contextlib.suppress(OSError):  # gone already, or not ours: leave it
                if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                    os.kill(pid, signal.SIGKILL)
        return code


def server_environment(model_dir: Path, port: int, **settings: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERWISE_")}
    env.update(
        {"TIERWISE_MODEL_DIR": str(model_dir), "TIERWISE_PORT": str(port), "TIERWISE_HOST": "127.0.0.1"}
    )
    env.update({f"TIERWISE_{key.upper()}": str(value) for key, value in settings.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_server(
    model_dir: Path, log_path: Path, command: Sequence[str] | None = None, **settings: object
) -> ServerProcess:
    """`python -m tierwise.service` (what `make serve` runs) on a free loopback port with TIERWISE_* settings."""
    port = free_port()
    # The decision log (when the service keeps one) goes next to the server log, not into runs/.
    settings = {"decision_db": f"sqlite:///{log_path.with_suffix('.sqlite')}", **settings}
    env = server_environment(model_dir, port, **settings)
    log = open(log_path, "ab")  # noqa: SIM115 - the child process writes to it until it exits
    try:
        process = subprocess.Popen(
            list(command or [sys.executable, "-m", "tierwise.service"]),
            env=env,
            stdout=log,
            stderr=log,
            cwd=REPO_DIR,
        )
    finally:
        log.close()
    return ServerProcess(process, port, log_path)


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def http_post(
    port: int, path: str, body: dict[str, Any], headers: dict[str, str], timeout: float = 120.0
) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def wait_until_ready(server: ServerProcess, timeout: float = 300.0, workers: int = 1) -> None:
    """Until /readyz answers 200 (`workers` times in a row, so each worker likely is up)."""
    deadline = time.monotonic() + timeout
    in_a_row = 0
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"the server exited with code {server.process.returncode}:\n{server.log_text()[-3000:]}"
            )
        try:
            status, _ = http_get(server.port, "/readyz", timeout=1.0)
        except OSError:
            status = 0
        in_a_row = in_a_row + 1 if status == 200 else 0
        if in_a_row >= max(1, workers) * 3:
            return
        time.sleep(0.1)
    raise RuntimeError(f"the server on port {server.port} was not ready within {timeout:.0f} s")


def worker_pids(master_pid: int) -> list[int]:
    """The uvicorn worker processes under `master_pid` (itself when it has none)."""
    children: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if parent == master_pid and b"resource_tracker" not in cmdline:
            children.append(int(entry.name))
    return sorted(children) or [master_pid]


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Samples the summed RSS of the server's workers every `interval` seconds in a thread."""

    def __init__(self, master_pid: int, interval: float = 0.2) -> None:
        self.master_pid = master_pid
        self.interval = interval
        self.samples_kib: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples_kib.append(sum(rss_kib(pid) for pid in worker_pids(self.master_pid)))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def quarters_mib(self) -> tuple[float, float]:
        """Mean RSS (MiB) over the first and over the last quarter of the samples."""
        samples = self.samples_kib
        if len(samples) < 4:
            return float("nan"), float("nan")
        quarter = len(samples) // 4
        return float(np.mean(samples[:quarter])) / 1024, float(np.mean(samples[-quarter:])) / 1024


# -- load ------------------------------------------------------------------------------------------


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


def raw_request(port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


def request_bodies(
    prompts: Sequence[str], count: int = 500, canary_every: int = 10
) -> tuple[list[bytes], str]:
    """JSON bodies for /classify; every `canary_every`-th prompt carries a canary word for the log check."""
    canary = f"{CANARY_PREFIX}{uuid.uuid4().hex[:12]}"
    bodies = []
    for index in range(count):
        text = prompts[index % len(prompts)]
        if index % canary_every == 0:
            text = f"{text} {canary}"
        bodies.append(json.dumps({"text": text}).encode())
    return bodies, canary


class KeepAliveClosed(Exception):
    """The server closed a reused keep-alive connection before sending any byte of the response."""


async def send_and_read(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, reused: bool
) -> tuple[int, bytes]:
    try:
        writer.write(request)
        return await read_response(reader)
    except (ConnectionResetError, BrokenPipeError) as err:
        if reused:
            raise KeepAliveClosed(type(err).__name__) from err
        raise
    except asyncio.IncompleteReadError as err:
        if reused and not err.partial:
            raise KeepAliveClosed("closed") from err
        raise


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
    hard_stop = started + max_seconds
    remaining = [total if total is not None else -1]

    def take() -> bool:
        now = time.perf_counter()
        if now >= hard_stop or (now >= stop and (until is None or until(stats))):
            return False
        if remaining[0] == -1:
            return True
        if remaining[0] == 0:
            return False
        remaining[0] -= 1
        return True

    async def client(offset: int) -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        served = 0  # responses on the current connection
        index = offset
        while take():
            request = requests[index % len(requests)]
            index += concurrency
            begun = time.perf_counter()
            try:
                for attempt in (1, 2):
                    if writer is None:
                        reader, writer = await asyncio.wait_for(
                            asyncio.open_connection("127.0.0.1", port), timeout
                        )
                        served = 0
                    assert reader is not None
                    try:
                        status, body = await asyncio.wait_for(
                            send_and_read(reader, writer, request, served > 0), timeout
                        )
                        break
                    except KeepAliveClosed:
                        writer.close()
                        reader = writer = None
                        if attempt == 2:
                            raise
                        stats.retried += 1
            except TimeoutError:
                stats.timeouts += 1
                stats.error_kinds["timeout"] += 1
            except (OSError, asyncio.IncompleteReadError, ValueError, KeepAliveClosed) as err:
                stats.errors += 1
                stats.error_kinds[type(err).__name__] += 1
            else:
                served += 1
                finished = time.perf_counter()
                if status == 200:
                    stats.ok += 1
                    stats.latencies_ms.append((finished - begun) * 1000)
                    if b"classifier_unavailable" in body:
                        stats.upward += 1
                    elif b'"decided_by":"estimator"' in body:
                        stats.estimated += 1
                    match = VERSION_RE.search(body)
                    if match:
                        stats.versions.append((finished - started, match.group(1).decode()))
                else:
                    stats.errors += 1
                    stats.error_kinds[f"http {status}"] += 1
                continue
            if writer is not None:  # after an error or timeout: a fresh connection, after a pause
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
        if writer is not None:
            writer.close()

    await asyncio.gather(*(client(i) for i in range(concurrency)))
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
        wait_until_ready(server, workers=workers)
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


# -- start-up faults -------------------------------------------------------------------------------

STARTUP_FAULT_HINTS = ("make train", "TIERWISE_MODEL_DIR", "re-export")


def startup_fault_case(
    name: str,
    model_dir: Path,
    log_path: Path,
    expected_words: Sequence[str],
    workers: int = 1,
    timeout: float = 180.0,
    server_settings: dict[str, object] | None = None,
) -> CaseResult:
    """The server must exit non-zero, never answer /readyz 200, and log what is wrong and what to do.

    The choice (documented in serving/tierwise/service/app.py): a model folder that cannot be loaded stops start-up
    and the process exits non-zero, rather than running on and answering /readyz 503 forever.
    """
    server = start_server(model_dir, log_path, workers=workers, **(server_settings or {}))
    ready_answers = 0
    probes = 0
    deadline = time.monotonic() + timeout
    while server.process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            status, _ = http_get(server.port, "/readyz", timeout=0.5)
            probes += 1
            ready_answers += status == 200
        time.sleep(0.05)
    exit_code = server.process.poll()
    if exit_code is None:
        server.stop(timeout=10)
    log = server.log_text()
    start_lines = [line for line in log.splitlines() if "cannot start" in line]
    problems = []
    if exit_code is None:
        problems.append(f"still running after {timeout:.0f} s")
    elif exit_code == 0:
        problems.append("exited with code 0")
    if ready_answers:
        problems.append(f"/readyz answered 200 {ready_answers} times")
    if not start_lines:
        problems.append("no 'cannot start' log line")
    message = start_lines[0] if start_lines else ""
    missing = [word for word in expected_words if word.lower() not in message.lower()]
    if missing:
        problems.append(f"the log line lacks {missing}")
    if start_lines and not any(hint in message for hint in STARTUP_FAULT_HINTS):
        problems.append("the log line does not say what to do")
    with contextlib.suppress(ValueError):
        message = json.loads(message).get("event", message)
    figures = f"{workers} worker(s): exit code {exit_code}; /readyz 200 answers {ready_answers}; log: {message[:160]}"
    return CaseResult(f"fault: {name}", 1, int(bool(problems)), figures, problems)


def startup_fault_cases(
    model_dir: Path, work_dir: Path, workers: int = 1, server_settings: dict[str, object] | None = None
) -> list[CaseResult]:
    folders = work_dir / "faulty-models"
    return [
        startup_fault_case(
            "model folder missing",
            folders / "does-not-exist",
            work_dir / "fault-missing.log",
            ["does not exist"],
            workers,
            server_settings=server_settings,
        ),
        startup_fault_case(
            "model.onnx corrupt",
            corrupt_model_folder(model_dir, folders / "corrupt"),
            work_dir / "fault-corrupt.log",
            ["model.onnx", "could not be loaded"],
            workers,
            server_settings=server_settings,
        ),
        startup_fault_case(
            "manifest does not match the model",
            mismatched_model_folder(model_dir, folders / "mismatch"),
            work_dir / "fault-mismatch.log",
            ["tier"],
            workers,
            server_settings=server_settings,
        ),
    ]


# -- hot reload ------------------------------------------------------------------------------------


def reload_case(
    model_dir: Path,
    work_dir: Path,
    prompts: Sequence[str],
    method: str = "sighup",
    workers: int = 2,
    seconds: float = 20.0,
    concurrency: int = 16,
    max_seconds: float = 180.0,
    server_settings: dict[str, object] | None = None,
) -> CaseResult:
    """Swap the model folder under load and reload (SIGHUP to the main process, or the admin endpoint).

    The load runs `seconds`, then on until the last answers all come from the new model (or
    `max_seconds`): with several workers, uvicorn replaces them one at a time.
    """
    if method not in {"sighup", "admin"}:
        raise ValueError(f"method must be 'sighup' or 'admin', got {method!r}")
    folders = work_dir / f"reload-{method}"
    first = variant_folder(model_dir, folders / "v1", {"git_commit": "reloadv1"})
    second = variant_folder(model_dir, folders / "v2", {"git_commit": "reloadv2"})
    current = folders / "current"
    point_symlink(current, first)
    token = uuid.uuid4().hex
    server = start_server(
        current,
        work_dir / f"reload-{method}.log",
        workers=workers,
        **{"admin_token": token, "log_level": "warning", **(server_settings or {})},
    )
    problems: list[str] = []
    reload_answer = ""
    try:
        wait_until_ready(server, workers=workers)
        bodies, _ = request_bodies(prompts)
        raw = [raw_request(server.port, "/classify", body) for body in bodies]

        async def run() -> LoadStats:
            window = 4 * concurrency

            def switched(stats: LoadStats) -> bool:
                recent = stats.versions[-window:]
                return len(recent) == window and all("reloadv2" in version for _, version in recent)

            load = asyncio.create_task(
                drive_load(
                    server.port, raw, concurrency, seconds=seconds, until=switched, max_seconds=max_seconds
                )
            )
            await asyncio.sleep(seconds / 4)
            point_symlink(current, second)
            if method == "sighup":
                server.process.send_signal(signal.SIGHUP)
            else:
                nonlocal reload_answer
                status, body = await asyncio.to_thread(
                    http_post, server.port, "/admin/reload", {}, {"X-Admin-Token": token}
                )
                reload_answer = f"{status} {body[:200].decode(errors='replace')}"
                if status != 200:
                    problems.append(f"POST /admin/reload answered {reload_answer}")
            return await load

        stats = asyncio.run(run())
    finally:
        exit_code = server.stop()
    versions = [version for _, version in stats.versions]
    old_version = versions[0] if versions else "?"
    new_version = versions[-1] if versions else "?"
    tail = versions[-4 * concurrency :]
    switched_at = next((t for t, v in stats.versions if v == new_version), float("nan"))
    failures = stats.failed
    problems += [f"{kind}: {count}" for kind, count in stats.error_kinds.items()]
    if "reloadv1" not in old_version or "reloadv2" not in new_version or any(v != new_version for v in tail):
        failures += 1
        problems.append(f"versions seen: {Counter(versions)}")
    last_old = max((t for t, v in stats.versions if v == old_version), default=float("nan"))
    figures = (
        f"{method}, {workers} worker(s), {concurrency} clients: errors {stats.errors}, "
        f"timeouts {stats.timeouts}, keep-alive closes retried {stats.retried}; model_version "
        f"{old_version} → {new_version} (reload at {seconds / 4:.1f} s, first new answer {switched_at:.1f} s, "
        f"last old answer {last_old:.1f} s); {stats.latency_text()}; exit code {exit_code}"
    )
    return CaseResult(f"hot reload ({method})", stats.tried, failures, figures, problems)


# -- oversized bodies -------------------------------------------------------------------------------


def send_oversized(
    port: int,
    size: int,
    chunk: int | None = None,
    pause: float = 0.0,
    chunked_encoding: bool = False,
    close: bool = True,
    timeout: float = 30.0,
) -> tuple[int, str]:
    """POST `size` bytes to /classify on a raw socket, all at once (`chunk=None`) or `chunk` bytes at a
    time with `pause` seconds between; then read the answer. (status or 0, what happened).

    `close` sends `Connection: close` (as urllib does): the server closes after answering, and a close
    with unread request bytes makes the kernel reset the connection, losing the answer."""
    import socket

    body = b'{"text": "' + b"x" * max(0, size - 12) + b'"}'
    framing = "Transfer-Encoding: chunked" if chunked_encoding else f"Content-Length: {len(body)}"
    head = (
        f"POST /classify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"{framing}\r\nConnection: {'close' if close else 'keep-alive'}\r\n\r\n"
    ).encode()
    step = chunk or len(body)
    send_error = ""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(head)
            for start in range(0, len(body), step):
                piece = body[start : start + step]
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked_encoding else piece)
                if pause:
                    time.sleep(pause)
            if chunked_encoding:
                sock.sendall(b"0\r\n\r\n")
        except OSError as err:  # the server stopped reading: what matters is whether the answer came
            send_error = f"{type(err).__name__} while sending; "
        answer = b""
        try:
            while b"\r\n" not in answer:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except OSError as err:
            return 0, f"{send_error}{type(err).__name__} while reading"
    status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        return 0, f"{send_error}no status line (read {len(answer)} bytes)"
    return int(parts[1]), f"{send_error}{status_line}"


def oversize_case(
    model_dir: Path, work_dir: Path, size: int = 2 * 1024 * 1024, repeats: int = 3, workers: int = 1
) -> CaseResult:
    """Oversized bodies (2 MiB against the 1 MiB default limit) sent fast, slowly (64 KiB every 5 ms),
    on a keep-alive connection and chunked without a length, on raw sockets to `python -m tierwise.service`:
    every sender reads a 413."""
    senders: dict[str, dict[str, Any]] = {
        "fast": {},
        "slow": {"chunk": 64 * 1024, "pause": 0.005},
        "fast keep-alive": {"close": False},
        "slow chunked": {"chunk": 64 * 1024, "pause": 0.005, "chunked_encoding": True},
    }
    server = start_server(model_dir, work_dir / "oversize.log", workers=workers, record_decisions="false")
    outcomes: dict[str, Counter[str]] = {name: Counter() for name in senders}
    problems: list[str] = []
    try:
        wait_until_ready(server, workers=workers)
        for _ in range(repeats):
            for name, options in senders.items():
                status, what = send_oversized(server.port, size, **options)
                # A client that sends the whole body before reading (urllib, requests) fails on a
                # send error, even when the answer could have been read afterwards.
                status = 0 if "while sending" in what else status
                outcomes[name][str(status)] += 1
                if status != 413:
                    problems.append(f"{name}: {what}")
        # The service still answers afterwards.
        status, _ = http_post(server.port, "/classify", {"text": "hello"}, {}, timeout=10.0)
        if status != 200:
            problems.append(f"a normal request after the oversized ones got {status}")
    finally:
        server.stop()
    tried = repeats * len(senders)
    figures = f"{size / 1048576:g} MiB bodies, {repeats} each: " + ", ".join(
        f"{name} {counts['413']}/{repeats} read 413" for name, counts in outcomes.items()
    )
    return CaseResult("413 for oversized bodies", tried, len(problems), figures, problems)


# -- metrics across workers -------------------------------------------------------------------------


def scrape_counter(text: str, name: str, **labels: str) -> float:
    """The sum of a counter's samples in a text exposition whose labels include `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def worker_request_counts(master_pid: int, endpoint: str = "/classify") -> dict[int, float]:
    """{worker pid: its own count of 200s on `endpoint`}, read from the workers' metric files."""
    from prometheus_client.multiprocess import MultiProcessCollector

    counts: dict[int, float] = {}
    for pid in worker_pids(master_pid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        folder = next(
            (v.split(b"=", 1)[1] for v in environ if v.startswith(b"PROMETHEUS_MULTIPROC_DIR=")), None
        )
        if folder is None or not (Path(folder.decode()) / f"counter_{pid}.db").exists():
            continue
        families = MultiProcessCollector.merge([str(Path(folder.decode()) / f"counter_{pid}.db")])
        counts[pid] = sum(
            sample.value
            for family in families
            for sample in family.samples
            if sample.name == "tierwise_http_requests_total"
            and sample.labels.get("endpoint") == endpoint
            and sample.labels.get("status") == "200"
        )
    return counts


def metrics_case(
    model_dir: Path, work_dir: Path, requests: int = 200, workers: int = 2, clients: int = 8, scrapes: int = 4
) -> CaseResult:
    """N requests on fresh connections to `workers` workers; every one of `scrapes` scrapes must count
    all N in tierwise_http_requests_total and tierwise_decisions_total, whichever worker answers it."""
    server = start_server(model_dir, work_dir / "metrics.log", workers=workers, record_decisions="false")
    problems: list[str] = []
    try:
        wait_until_ready(server, workers=workers)
        before = [
            scrape_counter(
                http_get(server.port, "/metrics")[1].decode(),
                "tierwise_http_requests_total",
                endpoint="/classify",
                status="200",
            )
        ]
        statuses: Counter[int] = Counter()

        def one(index: int) -> None:
            status, _ = http_post(server.port, "/classify", {"text": f"request {index}"}, {}, timeout=30.0)
            statuses[status] += 1

        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(one, range(requests)))
        per_worker = worker_request_counts(server.process.pid)
        seen: list[tuple[float, float, int]] = []
        for _ in range(scrapes):
            text = http_get(server.port, "/metrics")[1].decode()
            http_total = scrape_counter(
                text, "tierwise_http_requests_total", endpoint="/classify", status="200"
            )
            decisions = scrape_counter(text, "tierwise_decisions_total")
            live = sum(
                1
                for line in text.splitlines()
                if line.startswith("tierwise_model_info{") and line.endswith(" 1.0")
            )
            seen.append((http_total - before[0], decisions, live))
    finally:
        server.stop()
    ok = statuses.get(200, 0)
    if ok != requests:
        problems.append(f"answers: {dict(statuses)}")
    for http_total, decisions, live in seen:
        if http_total != ok or decisions != ok:
            problems.append(f"a scrape counted {http_total:g} requests and {decisions:g} decisions of {ok}")
        if live != workers:
            problems.append(f"a scrape showed {live} live workers' model info, not {workers}")
    if len([n for n in per_worker.values() if n > 0]) < min(2, workers):
        problems.append(f"the requests did not reach several workers ({per_worker}): the sum is not tested")
    figures = (
        f"{workers} workers, {requests} requests: each of {scrapes} scrapes counted "
        + ", ".join(sorted({f"{h:g}" for h, _, _ in seen}))
        + f" of {ok} (per worker: {' + '.join(f'{n:g}' for n in sorted(per_worker.values()))})"
    )
    return CaseResult("metrics summed across workers", requests, len(problems), figures, problems)


def admin_reload_workers_case(
    model_dir: Path, work_dir: Path, workers: int = 2, requests: int = 60
) -> CaseResult:
    """POST /admin/reload to one of `workers` workers: its answer waits until every worker serves the
    new folder, then every fresh connection (whichever worker takes it) answers with the new model."""
    folders = work_dir / "admin-workers"
    first = variant_folder(model_dir, folders / "v1", {"git_commit": "workers1"})
    second = variant_folder(model_dir, folders / "v2", {"git_commit": "workers2"})
    token = uuid.uuid4().hex
    server = start_server(
        first, work_dir / "admin-workers.log", workers=workers, admin_token=token, record_decisions="false"
    )
    problems: list[str] = []
    versions: Counter[str] = Counter()
    answer: dict[str, Any] = {}
    model: dict[str, Any] = {}
    try:
        wait_until_ready(server, workers=workers)
        status, body = http_post(
            server.port, "/admin/reload", {"model_dir": str(second)}, {"X-Admin-Token": token}, timeout=60.0
        )
        answer = json.loads(body) if status == 200 else {}
        if status != 200:
            problems.append(f"POST /admin/reload answered {status} {body[:200]!r}")
        for index in range(requests):  # each on a fresh connection: they reach both workers
            _, body = http_post(server.port, "/classify", {"text": f"after {index}"}, {}, timeout=30.0)
            match = VERSION_RE.search(body)
            versions[match.group(1).decode() if match else "?"] += 1
        model = json.loads(http_get(server.port, "/model")[1])
    finally:
        server.stop()
    served = {worker["pid"]: worker["model_version"] for worker in answer.get("workers", [])}
    if not answer.get("all_workers_agree") or len(served) != workers:
        problems.append(f"the reload answer shows workers {served}, agree={answer.get('all_workers_agree')}")
    expected = load_manifest(second).version
    if set(versions) != {expected}:
        problems.append(f"versions answered after the reload: {dict(versions)}")
    if not model.get("workers_agree") or len(model.get("workers", [])) != workers:
        problems.append(f"GET /model workers: {model.get('workers')}")
    figures = (
        f"{workers} workers, POST /admin/reload to one: its answer lists "
        + ", ".join(f"{pid}: {version}" for pid, version in sorted(served.items()))
        + f" (agree: {answer.get('all_workers_agree')}); then {versions.get(expected, 0)} of "
        f"{requests} fresh connections answered by the new model"
    )
    return CaseResult("admin reload reaches every worker", requests, len(problems), figures, problems)


# -- the decision log on PostgreSQL ----------------------------------------------------------------


def postgres_binaries() -> Path | None:
    """The folder with initdb and pg_ctl (PATH or Debian's /usr/lib/postgresql/N/bin), or None."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    return None


@contextlib.contextmanager
def throwaway_postgres(binaries: Path) -> Iterator[str]:
    """A PostgreSQL cluster in a temporary folder, reached only through a unix socket there; yields its
    SQLAlchemy URL and removes everything afterwards. As root (PostgreSQL refuses to run as root) the
    server runs as `nobody`."""
    import pwd

    folder = Path(tempfile.mkdtemp(prefix="tierwise-pg-"))
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir()
    run_as: dict[str, Any] = {}
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        for path in (folder, sockets):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        run_as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}

    def run(*command: str) -> None:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=folder, **run_as)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")

    try:
        run(
            str(binaries / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        options = f"-k {sockets} -c listen_addresses='' -c fsync=off -c max_connections=50"
        run(
            str(binaries / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(folder / "server.log"),
            "-w",
            "start",
        )
        try:
            yield f"postgresql+psycopg://postgres@/postgres?host={sockets}"
        finally:
            run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def postgres_case(
    model_dir: Path,
    work_dir: Path,
    requests: int = 400,
    workers: int = 2,
    clients: int = 8,
    feedback: int = 25,
) -> CaseResult:
    """The decision log on a real PostgreSQL: `tierwise db upgrade`, then `workers` workers writing
    under load (no decision lost or duplicated), feedback joining its decisions, `tierwise report`."""
    binaries = postgres_binaries()
    if binaries is None:
        return CaseResult(
            "decision log on PostgreSQL", 0, 1, "", ["no initdb/pg_ctl: apt-get install -y postgresql"]
        )
    from tierwise.ops.decision_log import DecisionStore

    problems: list[str] = []
    cli = [sys.executable, "-m", "tierwise.cli.main"]
    with throwaway_postgres(binaries) as url:
        upgrade = subprocess.run(
            [*cli, "db", "upgrade", "--db", url], capture_output=True, text=True, cwd=REPO_DIR
        )
        if upgrade.returncode != 0:
            problems.append(f"tierwise db upgrade failed: {upgrade.stderr[-500:]}")
        server = start_server(model_dir, work_dir / "postgres.log", workers=workers, decision_db=url)
        sent = [f"pg-{uuid.uuid4().hex[:12]}-{i}" for i in range(requests)]
        statuses: Counter[int] = Counter()
        feedback_statuses: Counter[int] = Counter()
        try:
            wait_until_ready(server, workers=workers)

            def one(request_id: str) -> None:
                status, _ = http_post(
                    server.port,
                    "/classify",
                    {"text": f"load {request_id}"},
                    {"X-Request-ID": request_id},
                    30.0,
                )
                statuses[status] += 1

            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(one, sent))
            deadline = time.monotonic() + 30
            store = DecisionStore(url)
            try:  # the workers write in the background: wait until the rows are there
                while time.monotonic() < deadline and len(store.labeled_decisions()) < requests:
                    time.sleep(0.2)
            finally:
                store.close()
            for request_id in sent[:feedback]:
                status, _ = http_post(
                    server.port,
                    "/feedback",
                    {"request_id": request_id, "outcome": {"needed_tier": "frontier"}},
                    {},
                )
                feedback_statuses[status] += 1
        finally:
            exit_code = server.stop()
        store = DecisionStore(url)
        try:
            rows = store.labeled_decisions()
            revision = store.current_revision()
        finally:
            store.close()
        ids = [row.decision.request_id for row in rows if row.decision.request_id.startswith("pg-")]
        joined = sum(1 for row in rows if row.feedback is not None and row.feedback.needed_tier == "frontier")
        report_dir = work_dir / "postgres-report"
        report = subprocess.run(
            [*cli, "report", "--db", url, "--since", "1d", "--out", str(report_dir), "--no-plots"],
            capture_output=True,
            text=True,
            cwd=REPO_DIR,
        )
    reported = (
        json.loads((report_dir / "report.json").read_text())["decisions"] if report.returncode == 0 else None
    )
    lost, duplicated = len(set(sent) - set(ids)), len(ids) - len(set(ids))
    if statuses.get(200, 0) != requests:
        problems.append(f"classify answers: {dict(statuses)}")
    if lost or duplicated or len(ids) != requests:
        problems.append(f"{len(ids)} rows for {requests} sent: {lost} lost, {duplicated} duplicated")
    if feedback_statuses.get(200, 0) != feedback or joined != feedback:
        problems.append(f"feedback answers {dict(feedback_statuses)}, {joined} of {feedback} joined")
    if report.returncode != 0 or reported != requests:
        problems.append(
            f"tierwise report: exit {report.returncode}, {reported} decisions; {report.stderr[-300:]}"
        )
    if exit_code != 0:
        problems.append(f"server exit code {exit_code}")
    figures = (
        f"PostgreSQL {binaries.parent.name}, schema {revision}, {workers} workers, {clients} clients: "
        f"{len(set(ids))} decisions written of {requests} sent ({lost} lost, {duplicated} duplicated); "
        f"feedback joined {joined}/{feedback}; tierwise report read {reported}"
    )
    return CaseResult("decision log on PostgreSQL", requests, len(problems), figures, problems)


# -- hang / crash ----------------------------------------------------------------------------------


class FaultyClassifier:
    """Wraps a classifier; `mode` switches it to hang (until released), raise, return garbage, or be
    slow (`slow_seconds` per call)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.manifest = inner.manifest
        self.tiers = inner.tiers
        self.version = inner.version
        self.mode = "ok"
        self.slow_seconds = 0.5
        self.release = threading.Event()

    def predict_proba(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        if self.mode == "hang":
            self.release.wait(timeout=120)
        elif self.mode == "raise":
            raise RuntimeError("the classifier crashed")
        elif self.mode == "slow":
            time.sleep(self.slow_seconds)
        elif self.mode == "garbage":
            return np.zeros((len(texts) + 1, len(self.tiers))), [0] * (len(texts) + 1)
        return self.inner.predict_proba(texts)


def hang_and_crash_case(
    model_dir: Path, requests_per_mode: int = 40, deadline_ms: float = 100.0, slack_ms: float = 400.0
) -> CaseResult:
    """With the classifier hanging, raising, or returning the wrong shape, every /classify answer
    is a 200 within deadline + slack: a hang looks like overload, so the folder's estimator answers
    it (`decided_by: estimator`) where there is one; an error (raise, wrong shape) and a hang without
    an estimator go to the top tier with `classifier_unavailable` (`decided_by: fallback`)."""
    from fastapi.testclient import TestClient
    from tierwise.service.app import create_app, load_tier_classifier

    settings = in_process_settings(model_dir, deadline_ms=deadline_ms, onnx_threads=1, score_cache_size=0)
    faulty = FaultyClassifier(load_tier_classifier(settings))
    has_estimator = estimator_for(faulty.inner, settings) is not None
    app = create_app(settings, classifier_factory=lambda _: faulty)
    problems: list[str] = []
    latencies: list[float] = []
    tried = failures = 0
    with TestClient(app) as client:
        top_tier = client.get("/model").json()["tiers"][-1]

        def one(text: str) -> tuple[float, int, dict[str, Any]]:
            began = time.perf_counter()
            response = client.post("/classify", json={"text": text})
            return (time.perf_counter() - began) * 1000, response.status_code, response.json()

        try:
            for mode in ("hang", "raise", "garbage"):
                faulty.mode = mode
                with ThreadPoolExecutor(max_workers=8) as pool:
                    answers = list(pool.map(one, [f"hello number {i}" for i in range(requests_per_mode)]))
                if mode == "hang":
                    faulty.release.set()  # free the classifier thread: the next modes test errors, not a hang
                    time.sleep(0.2)
                estimated = mode == "hang" and has_estimator
                for latency, status, body in answers:
                    tried += 1
                    latencies.append(latency)
                    if estimated:
                        bad = status != 200 or body.get("decided_by") != "estimator"
                    else:
                        bad = status != 200 or "classifier_unavailable" not in body.get("reasons", [])
                        bad = bad or body.get("tier") != top_tier or body.get("decided_by") != "fallback"
                    bad = bad or latency > deadline_ms + slack_ms
                    if bad:
                        failures += 1
                        problems.append(f"{mode}: {status} after {latency:.0f} ms: {str(body)[:120]}")
        finally:
            faulty.mode = "ok"
            faulty.release.set()
    figures = (
        f"hang × {requests_per_mode}: all {'estimator' if has_estimator else f'{top_tier}/classifier_unavailable'}; "
        f"raise, wrong shape × {requests_per_mode}: all {top_tier}/classifier_unavailable; "
        f"deadline {deadline_ms:g} ms; latency p50 {percentile(latencies, 50):.0f} ms, "
        f"max {max(latencies, default=float('nan')):.0f} ms"
    )
    return CaseResult("fault: classifier hangs / crashes", tried, failures, figures, problems)


# -- SIGTERM drain ---------------------------------------------------------------------------------


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
        wait_until_ready(server, workers=workers)
        path = "/classify/batch" if "items" in long_body else "/classify"
        long_raw = raw_request(server.port, path, json.dumps(long_body).encode())
        bodies, _ = request_bodies(prompts, count=50)
        short_raw = [raw_request(server.port, "/classify", body) for body in bodies]

        async def run() -> tuple[list[tuple[str, float]], list[tuple[str, float]], float]:
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
            longs = [
                asyncio.create_task(_one_request(server.port, long_raw, 60.0)) for _ in range(long_requests)
            ]
            await asyncio.sleep(signal_after)
            signalled = time.perf_counter()
            server.process.send_signal(signal.SIGTERM)
            long_outcomes = await asyncio.gather(*longs)
            await asyncio.gather(*shorts)
            return long_outcomes, short, signalled

        long_outcomes, short_outcomes, signalled = asyncio.run(run())
        exit_code = server.process.wait(timeout=60)
        drained = time.perf_counter() - signalled
    finally:
        if server.process.poll() is None:
            server.stop()
    problems = []
    in_flight = sum(1 for outcome, ended in long_outcomes if outcome == "ok" and ended > signalled)
    long_failed = [outcome for outcome, _ in long_outcomes if outcome != "ok"]
    if long_failed:
        problems.append(f"long requests in flight: {Counter(long_failed)}")
    if in_flight == 0:
        problems.append("no long request was still in flight at SIGTERM; raise long_body or signal sooner")
    short_counts = Counter(outcome for outcome, _ in short_outcomes)
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
    return CaseResult(
        "SIGTERM under load (drain)", len(long_outcomes) + len(short_outcomes), failures, figures, problems
    )


# -- security --------------------------------------------------------------------------------------


def auth_case(model_dir: Path) -> CaseResult:
    """API keys on the routing, model and admin endpoints; operations endpoints open; limits enforced."""
    from fastapi.testclient import TestClient
    from tierwise.service.app import create_app

    keys, token = ("key-one-" + uuid.uuid4().hex, "key-two-" + uuid.uuid4().hex), uuid.uuid4().hex
    settings = in_process_settings(
        model_dir,
        api_keys=",".join(keys),
        admin_token=token,
        onnx_threads=1,
        max_batch_items=4,
        max_body_bytes=4096,
    )
    good = {"X-API-Key": keys[1]}
    classify = {"text": "hello"}
    expectations: list[tuple[str, str, dict[str, Any] | None, dict[str, str], int]] = [
        ("POST", "/classify", classify, {}, 401),
        ("POST", "/classify", classify, {"X-API-Key": "wrong"}, 401),
        ("POST", "/classify", classify, {"X-API-Key": keys[0][:-1]}, 401),
        ("POST", "/classify", classify, {"Authorization": "Bearer wrong"}, 401),
        ("POST", "/classify", classify, {"X-API-Key": keys[0]}, 200),
        ("POST", "/classify", classify, good, 200),
        ("POST", "/classify", classify, {"Authorization": f"Bearer {keys[0]}"}, 200),
        ("POST", "/classify/batch", {"items": [classify]}, {}, 401),
        ("POST", "/classify/batch", {"items": [classify]}, good, 200),
        ("POST", "/classify/batch", {"items": [classify] * 5}, good, 413),
        ("POST", "/classify", {"text": "a " * 4000}, good, 413),
        ("POST", "/feedback", {"request_id": "r1", "outcome": {"passed": True}}, {}, 401),
        ("GET", "/model", None, {}, 401),
        ("GET", "/model", None, good, 200),
        ("POST", "/admin/reload", {}, {"X-Admin-Token": token}, 401),
        ("POST", "/admin/reload", {}, good, 401),
        ("POST", "/admin/reload", {}, {**good, "X-Admin-Token": "wrong"}, 401),
        ("POST", "/admin/reload", {}, {**good, "X-Admin-Token": token}, 200),
        ("GET", "/healthz", None, {}, 200),
        ("GET", "/readyz", None, {}, 200),
        ("GET", "/metrics", None, {}, 200),
    ]
    problems = []
    with TestClient(create_app(settings)) as client:
        for method, path, body, headers, expected in expectations:
            response = client.request(method, path, json=body, headers=headers)
            if response.status_code != expected:
                problems.append(
                    f"{method} {path} {sorted(headers)}: {response.status_code}, expected {expected}"
                )
            elif expected == 401 and "TIERWISE_" not in response.json()["error"]["message"]:
                problems.append(f"{method} {path}: the 401 message does not say which setting holds the keys")
    figures = "no key / wrong key / admin without token → 401; key in X-API-Key or Bearer → 200; "
    figures += "oversize body and batch → 413; /healthz, /readyz, /metrics open"
    return CaseResult(
        "security: API keys, admin token, limits", len(expectations), len(problems), figures, problems
    )


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        from tierwise.service.logs import JsonFormatter

        self.setFormatter(JsonFormatter())
        self.stream = io.StringIO()

    def emit(self, record: logging.LogRecord) -> None:
        self.stream.write(self.format(record) + "\n")


@contextlib.contextmanager
def captured_service_logs() -> Iterator[io.StringIO]:
    """Every record of the service's loggers (at DEBUG, so access logs too), as JSON lines."""
    handler = _Capture()
    loggers = [logging.getLogger(name) for name in ("tierwise", "uvicorn", "uvicorn.error")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield handler.stream
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def prompt_log_case(model_dir: Path, server_logs: Sequence[tuple[str, str]] = ()) -> CaseResult:
    """Prompt text never reaches the logs by default: in-process (valid, invalid, batch, failing
    classifier) at DEBUG, plus any (log text, canary) pairs from server runs."""
    from fastapi.testclient import TestClient
    from tierwise.service.app import create_app, load_tier_classifier

    canary = f"{CANARY_PREFIX}{uuid.uuid4().hex[:12]}"
    settings = in_process_settings(model_dir, onnx_threads=1, max_batch_items=4)
    faulty = FaultyClassifier(load_tier_classifier(settings))
    payloads: list[tuple[str, Any]] = [
        ("/classify", {"text": f"please summarize {canary}"}),
        ("/classify", {"messages": [{"role": "user", "content": f"prove {canary}"}]}),
        ("/classify", {"text": f"{canary}", "min_tier": "nope"}),
        ("/classify", {"text": f"{canary}", "unknown": 1}),
        ("/classify", {"text": f"{canary}", "route": canary * 20}),
        ("/classify", f'{{"text": "{canary}"'),
        ("/classify/batch", {"items": [{"text": canary}] * 2}),
        ("/classify/batch", {"items": [{"text": canary}] * 5}),
    ]
    sent = 0
    with captured_service_logs() as logs, TestClient(create_app(settings, lambda _: faulty)) as client:
        for mode in ("ok", "raise"):
            faulty.mode = mode
            for path, payload in payloads:
                if isinstance(payload, str):
                    client.post(path, content=payload.encode(), headers={"content-type": "application/json"})
                else:
                    client.post(path, json=payload)
                sent += 1
        faulty.mode = "ok"
    texts = [(logs.getvalue(), canary), *server_logs]
    leaks = sum(text.count(word) for text, word in texts)
    lines = sum(len(text.splitlines()) for text, _ in texts)
    problems = [f"{leaks} log occurrences of a prompt canary"] if leaks else []
    figures = (
        f"{sent} in-process requests (ok, invalid, failing classifier) + {len(server_logs)} server log(s), "
    )
    figures += f"{lines} log lines: prompt canaries found {leaks}"
    return CaseResult(
        "security: no prompt text in logs", sent + len(server_logs), int(leaks > 0), figures, problems
    )


def unsafe_loader_hits(root: Path = SERVING_DIR) -> list[str]:
    """`file:line: text` for every source line under serving/ naming an unsafe deserialiser."""
    hits = []
    for path in sorted(root.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if any(pattern in line for pattern in UNSAFE_LOADERS):
                hits.append(f"{path.relative_to(root.parent)}:{number}: {line.strip()}")
    return hits


def pinned_requirements() -> dict[str, str]:
    """{name: version} for the `==` pins of the serve and dev extras in pyproject.toml."""
    project = tomllib.loads((REPO_DIR / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins: dict[str, str] = {}
    for extra in ("serve", "dev"):
        for requirement in project["optional-dependencies"][extra]:
            name, _, version = requirement.partition("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def lock_versions(lock_file: Path = LOCK_FILE) -> dict[str, str]:
    versions = {}
    for line in lock_file.read_text(encoding="utf-8").splitlines():
        name, sep, version = line.strip().partition("==")
        if sep and not line.startswith("#"):
            versions[name.strip().lower().replace("_", "-")] = version.strip()
    return versions


def supply_chain_case() -> CaseResult:
    """No unsafe deserialisation in serving/; serve and dev extras pinned `==`, matching the lock."""
    problems = unsafe_loader_hits()
    pins = pinned_requirements()
    problems += [f"{name} is not pinned with ==" for name, version in pins.items() if not version]
    locked = lock_versions() if LOCK_FILE.is_file() else {}
    if not locked:
        problems.append(f"{LOCK_FILE.relative_to(REPO_DIR)} is missing; regenerate it (see its header)")
    for name, version in pins.items():
        key = name.split("[")[0].replace("_", "-")
        if locked and version and locked.get(key) != version:
            problems.append(f"{name}=={version} in pyproject.toml, {locked.get(key)} in the lock")
    files = len(list(SERVING_DIR.rglob("*.py")))
    figures = f"{files} serving/*.py files scanned: unsafe loaders {len(unsafe_loader_hits())}; "
    figures += (
        f"{len(pins)} serve/dev pins, {len(locked)} locked packages ({LOCK_FILE.relative_to(REPO_DIR)})"
    )
    return CaseResult(
        "security: ONNX/JSON only, pinned deps", files + len(pins), len(problems), figures, problems
    )


PRIVACY_CASES_FILE = REPO_DIR / "tests" / "helpers" / "privacy_cases.py"
PRIVACY_MIN_RECALL = 0.97  # of the adversarial set's personal data and secrets
PRIVACY_MAX_FALSE_POSITIVE_RATE = 0.02  # of its ordinary prompts


def privacy_case(cases_file: Path = PRIVACY_CASES_FILE) -> CaseResult:
    """The privacy rule on the adversarial set (tests/helpers/privacy_cases.py): recall on obfuscated
    card numbers, e-mails, IBANs, keys and phones; false positives on ordinary look-alike prompts."""
    import importlib.util

    from tierwise.core.privacy import detect_private_data

    spec = importlib.util.spec_from_file_location("tierwise_privacy_cases", cases_file)
    if spec is None or spec.loader is None or not cases_file.is_file():
        return CaseResult("privacy: adversarial set", 0, 1, "", [f"{cases_file} is missing"])
    cases = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cases)
    missed = [(text, kind) for text, kind in cases.PRIVATE if kind not in detect_private_data(text)]
    flagged = [text for text in cases.ORDINARY if detect_private_data(text)]
    recall = 1 - len(missed) / len(cases.PRIVATE)
    false_positive_rate = len(flagged) / len(cases.ORDINARY)
    per_kind = Counter(kind for _, kind in cases.PRIVATE)
    missed_kind = Counter(kind for _, kind in missed)
    figures = (
        f"recall {recall:.1%} ({len(cases.PRIVATE) - len(missed)} of {len(cases.PRIVATE)}: "
        + ", ".join(f"{kind} {n - missed_kind[kind]}/{n}" for kind, n in sorted(per_kind.items()))
        + f"); false positives {false_positive_rate:.1%} ({len(flagged)} of {len(cases.ORDINARY)} "
        f"ordinary prompts); thresholds: recall >= {PRIVACY_MIN_RECALL:.0%}, "
        f"false positives <= {PRIVACY_MAX_FALSE_POSITIVE_RATE:.0%}"
    )
    problems = [f"missed {kind}: {text[:60]!r}" for text, kind in missed]
    problems += [f"flagged: {text[:60]!r}" for text in flagged]
    failures = int(recall < PRIVACY_MIN_RECALL) + int(false_positive_rate > PRIVACY_MAX_FALSE_POSITIVE_RATE)
    return CaseResult(
        "privacy: adversarial set", len(cases.PRIVATE) + len(cases.ORDINARY), failures, figures, problems
    )


def serve_slow_classifier(delay_ms: float) -> None:
    """The service (TIERWISE_* settings, one process) with a classifier taking `delay_ms` per call:
    the server of the short drain test, whose requests must still be in flight at SIGTERM."""
    import uvicorn
    from tierwise.service.app import create_app, load_tier_classifier
    from tierwise.service.logs import configure_logging, uvicorn_log_config

    settings = Settings()

    def slow_factory(factory_settings: Settings) -> FaultyClassifier:
        slow = FaultyClassifier(load_tier_classifier(factory_settings))
        slow.mode, slow.slow_seconds = "slow", delay_ms / 1000
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


# -- runner ----------------------------------------------------------------------------------------


def markdown_table(results: Sequence[CaseResult], header: str) -> str:
    lines = [header, "", "| case | tried | failures | figures |", "|---|---:|---:|---|"]
    for result in results:
        figures = result.figures.replace("|", "/")
        if result.problems:
            figures += " — " + "; ".join(result.problems[:3]).replace("|", "/")
        lines.append(f"| {result.case} | {result.tried} | {result.failures} | {figures} |")
    verdict = "all cases passed" if all(r.passed for r in results) else "FAILURES: see the rows above"
    return "\n".join([*lines, "", verdict, ""])


def run_suite(args: argparse.Namespace, progress: Callable[[str], None]) -> list[CaseResult]:
    from tierwise.service.app import create_app

    model_dir = Path(args.model_dir).resolve()
    prompts, _ = read_prompts(Path(args.prompts)) if args.prompts else (FALLBACK_PROMPTS, "")
    results: list[CaseResult] = []

    def record(result: CaseResult) -> None:
        results.append(result)
        progress(str(result))

    with tempfile.TemporaryDirectory(prefix="tierwise-reliability-") as tmp:
        work_dir = Path(tmp)
        side_clients = min(16, args.concurrency)  # clients of the reload and drain runs
        key = uuid.uuid4().hex
        fuzz_settings = in_process_settings(
            model_dir,
            micro_batching=False,
            api_keys=key,
            record_decisions=True,  # the service's default: POST /feedback is fuzzed with its log
            decision_db=f"sqlite:///{work_dir / 'fuzz-decisions.sqlite'}",
        )
        # The GET operations have nothing to vary (about one case each): the budget goes to the four
        # operations with a body, positive and negative.
        fuzz = fuzz_app(create_app(fuzz_settings), -(-args.fuzz_cases // 8) + 20, {"X-API-Key": key})
        if fuzz.tried < args.fuzz_cases:
            fuzz.failures += 1
            fuzz.problems.append(f"only {fuzz.tried} of the {args.fuzz_cases} cases asked for were generated")
        record(fuzz)
        load, load_log, canary = load_case(
            model_dir, work_dir, prompts, args.requests, args.concurrency, args.workers
        )
        record(load)
        for result in startup_fault_cases(model_dir, work_dir, workers=args.workers):
            record(result)
        record(
            reload_case(
                model_dir, work_dir, prompts, "sighup", args.workers, args.reload_seconds, side_clients
            )
        )
        record(
            reload_case(
                model_dir, work_dir, prompts, "admin", args.workers, args.reload_seconds, side_clients
            )
        )
        record(admin_reload_workers_case(model_dir, work_dir, workers=max(2, args.workers)))
        record(oversize_case(model_dir, work_dir, workers=args.workers))
        record(metrics_case(model_dir, work_dir, workers=max(2, args.workers)))
        record(postgres_case(model_dir, work_dir, workers=max(2, args.workers)))
        record(hang_and_crash_case(model_dir))
        record(drain_case(model_dir, work_dir, prompts, args.workers, side_clients))
        record(auth_case(model_dir))
        record(prompt_log_case(model_dir, [(load_log, canary)]))
        record(supply_chain_case())
        record(privacy_case())
        if args.keep_logs:
            shutil.copytree(
                work_dir, args.keep_logs, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.onnx")
            )
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model-dir", default=str(Settings().model_dir), help="model folder (TIERWISE_MODEL_DIR)"
    )
    parser.add_argument(
        "--prompts", default=str(DEFAULT_PROMPTS), help="JSONL with 'text' fields for the load"
    )
    parser.add_argument("--fuzz-cases", type=int, default=1000, help="schemathesis cases in total (at least)")
    parser.add_argument("--requests", type=int, default=20_000, help="requests in the load run")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent clients in the load run")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers for the server runs")
    parser.add_argument("--reload-seconds", type=float, default=20.0, help="load duration around a reload")
    parser.add_argument("--out", help="also write the table to this file")
    parser.add_argument("--keep-logs", help="copy the server logs to this folder")
    parser.add_argument(
        "--serve-slow-classifier",
        type=float,
        metavar="MS",
        help="instead of the suite: serve with a classifier taking MS per call (for the drain test)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_slow_classifier is not None:
        serve_slow_classifier(args.serve_slow_classifier)
        return 0
    model_dir = Path(args.model_dir)
    if not (model_dir / MANIFEST_FILE).is_file():
        print(f"no model in {model_dir}; run `make train` or pass --model-dir", file=sys.stderr)
        return 2
    started = time.perf_counter()
    results = run_suite(args, lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    header = (
        f"## make reliability: {model_dir} — {args.requests} requests at {args.concurrency} clients, "
        f"{args.workers} workers, {os.cpu_count()} CPUs, {time.perf_counter() - started:.0f} s"
    )
    table = markdown_table(results, header)
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table, encoding="utf-8")
    return 0 if all(result.passed for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
