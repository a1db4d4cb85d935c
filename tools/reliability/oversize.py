"""413 for oversized bodies, however they are sent: fast, slowly, kept alive, chunked."""

from __future__ import annotations

import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tools.harness import http_post
from tools.reliability.fixtures import start_server
from tools.reliability.report import CaseResult


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
        server.wait_until_ready(workers=workers)
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
