"""What the tools share: the checkout, a served process, a keep-alive HTTP client and RSS readings.

Tools run from a checkout, never from an installed wheel. Every benchmark and the reliability suite
start the real service (`python -m tierwise.service`, what `make serve` runs) the same way: on a free
loopback port with TIERWISE_* settings in its environment, its output in a log file, ready once
/readyz answers 200, stopped with SIGTERM (then SIGKILL, workers included). Load goes through raw
HTTP/1.1 keep-alive connections on asyncio streams: cheaper than an HTTP library, so more of the
machine's cores go to the server under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO_DIR = Path(__file__).resolve().parents[1]
SERVING_DIR = REPO_DIR / "serving"
SERVICE_COMMAND = (sys.executable, "-m", "tierwise.service")
LOG_TAIL_CHARS = 4000


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile of latencies (NaN for none: a level without answers shows as such)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


# -- a served process ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_environment(
    model_dir: Path, port: int, settings: Mapping[str, object], inherit_settings: bool
) -> dict[str, str]:
    """The environment of a served process: `settings` as TIERWISE_<NAME> variables.

    With `inherit_settings` the caller's own TIERWISE_* variables stay (a benchmark measures the
    service as the operator configured it); without, they are dropped so that a reliability case
    tests exactly the settings it names.
    """
    env = {k: v for k, v in os.environ.items() if inherit_settings or not k.startswith("TIERWISE_")}
    env.update(
        {"TIERWISE_MODEL_DIR": str(model_dir), "TIERWISE_PORT": str(port), "TIERWISE_HOST": "127.0.0.1"}
    )
    env.update({f"TIERWISE_{key.upper()}": str(value) for key, value in settings.items()})
    env["PYTHONUNBUFFERED"] = "1"  # the log tail shows what happened up to the end
    return env


def start_process(
    command: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`command` run from the checkout, its stdout and stderr appended to `log_path`."""
    log = open(log_path, "ab")  # noqa: SIM115 - the child process writes to it until it exits
    try:
        return subprocess.Popen(
            list(command), env=dict(env) if env is not None else None, stdout=log, stderr=log, cwd=REPO_DIR
        )
    finally:
        log.close()


class ServiceNotReady(RuntimeError):
    """The served process exited or never answered /readyz 200; the message ends with its log tail."""


@dataclass
class ServedProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        return self.log_text()[-chars:]

    def wait_until_ready(self, timeout: float = 300.0, workers: int = 1) -> None:
        """Until /readyz answers 200 three times per worker in a row (so each worker likely is up)."""
        deadline = time.monotonic() + timeout
        in_a_row = 0
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceNotReady(
                    f"the server exited with code {self.process.returncode}; its log ends:\n{self.log_tail()}"
                )
            try:
                status, _ = http_get(self.port, "/readyz", timeout=1.0)
            except OSError:
                status = 0
            in_a_row = in_a_row + 1 if status == 200 else 0
            if in_a_row >= max(1, workers) * 3:
                return
            time.sleep(0.1)
        raise ServiceNotReady(
            f"the server on port {self.port} was not ready within {timeout:.0f} s; its log ends:\n"
            f"{self.log_tail()}"
        )

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


def start_service(
    model_dir: Path,
    log_path: Path,
    command: Sequence[str] | None = None,
    inherit_settings: bool = False,
    **settings: object,
) -> ServedProcess:
    """`command` (default `python -m tierwise.service`) on a free loopback port with TIERWISE_* settings;
    not waited for: call `wait_until_ready`, and `stop` it."""
    port = free_port()
    env = service_environment(model_dir, port, settings, inherit_settings)
    return ServedProcess(start_process(command or SERVICE_COMMAND, log_path, env), port, log_path)


@contextlib.contextmanager
def served_service(
    model_dir: Path,
    log_path: Path,
    command: Sequence[str] | None = None,
    inherit_settings: bool = False,
    stop_timeout: float = 10.0,
    **settings: object,
) -> Iterator[ServedProcess]:
    """A service ready on its port for the body of the `with`; its log tail goes to stderr if the body
    fails, and it is stopped on the way out."""
    server = start_service(model_dir, log_path, command, inherit_settings, **settings)
    try:
        server.wait_until_ready(workers=int(str(settings.get("workers", 1))))
        yield server
    except ServiceNotReady:
        raise
    except Exception:
        sys.stderr.write(server.log_tail())
        raise
    finally:
        server.stop(timeout=stop_timeout)


def wait_for_port(port: int, process: subprocess.Popen[bytes], name: str, timeout: float = 60.0) -> None:
    """Until something accepts connections on `port` (a server without /readyz, e.g. the fake LLM)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the {name} exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the {name} on port {port} did not start within {timeout:.0f} s")


# -- HTTP ---------------------------------------------------------------------------------------------


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """(status, body) of a GET on loopback; an HTTP error status is an answer, not an exception."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def http_post(
    port: int, path: str, body: dict[str, Any], headers: dict[str, str], timeout: float = 120.0
) -> tuple[int, bytes]:
    """(status, body) of a JSON POST on loopback (a new connection each time, as urllib does)."""
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


def raw_request(port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """The bytes of a keep-alive JSON POST: built once per body, written as is for every send."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(status, body) of one response with a Content-Length (what the service sends)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return status, await reader.readexactly(length)


class KeepAliveClosed(ConnectionError):
    """The server closed a reused keep-alive connection before sending any byte of the response."""


class KeepAliveConnection:
    """One HTTP/1.1 connection to a loopback port, opened on the first send and reused after.

    A send on a reused connection that the server closed before any response byte (a worker
    stopping between two requests) raises `KeepAliveClosed`, which callers may retry on a new
    connection as HTTP/1.1 clients do; any other failure raises as is. After a failure, `close()`.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.served = 0  # responses on the current connection

    @property
    def is_open(self) -> bool:
        return self.writer is not None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.served = 0

    async def send(self, request: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        reused = self.served > 0
        try:
            self.writer.write(request)
            answer = await read_response(self.reader)
        except (ConnectionResetError, BrokenPipeError) as err:
            if reused:
                raise KeepAliveClosed(type(err).__name__) from err
            raise
        except asyncio.IncompleteReadError as err:
            if reused and not err.partial:
                raise KeepAliveClosed("closed") from err
            raise
        self.served += 1
        return answer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# -- memory -------------------------------------------------------------------------------------------


def memory_kib(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of a process in KiB, from /proc (Linux); (0, 0) once it has gone."""
    values = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    values[name] = int(rest.split()[0])
    except OSError:
        pass
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def rss_kib(pid: int) -> int:
    return memory_kib(pid)[0]


def tree_rss_kib(pid: int) -> int:
    """RSS of a process and all its descendants (the workers of a multi-worker service), in KiB."""
    total = rss_kib(pid)
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text(encoding="ascii").split():
            total += tree_rss_kib(int(child))
    return total


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
