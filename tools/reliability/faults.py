"""Faults: a model folder that cannot be loaded stops start-up; a classifier that hangs, raises or
returns the wrong shape still gets every request an answer, upward, within the deadline."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tierwise.core.estimator import estimator_for

from tools.doubles import ControllableClassifier
from tools.harness import http_get, percentile
from tools.reliability.fixtures import (
    corrupt_model_folder,
    in_process_settings,
    mismatched_model_folder,
    start_server,
)
from tools.reliability.report import CaseResult

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

    The choice (documented in serving/tierwise/service/server.py): a model folder that cannot be loaded stops start-up
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


def hang_and_crash_case(
    model_dir: Path, requests_per_mode: int = 40, deadline_ms: float = 100.0, slack_ms: float = 400.0
) -> CaseResult:
    """With the classifier hanging, raising, or returning the wrong shape, every /classify answer
    is a 200 within deadline + slack: a hang looks like overload, so the folder's estimator answers
    it (`decided_by: estimator`) where there is one; an error (raise, wrong shape) and a hang without
    an estimator go to the top tier with `classifier_unavailable` (`decided_by: fallback`)."""
    from fastapi.testclient import TestClient
    from tierwise.service.app import create_app
    from tierwise.service.classifier import load_tier_classifier

    settings = in_process_settings(model_dir, deadline_ms=deadline_ms, onnx_threads=1, score_cache_size=0)
    faulty = ControllableClassifier(load_tier_classifier(settings))
    has_estimator = estimator_for(faulty.inner, settings.estimator) is not None
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
