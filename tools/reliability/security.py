"""Security: API keys and the admin token, prompt text absent from the logs, no unsafe
deserialisation in serving/, dependencies pinned and locked."""

from __future__ import annotations

import contextlib
import io
import logging
import tomllib
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tools.doubles import ControllableClassifier
from tools.harness import REPO_DIR, SERVING_DIR
from tools.reliability.fixtures import CANARY_PREFIX, in_process_settings
from tools.reliability.report import CaseResult

LOCK_FILE = REPO_DIR / "tests" / "requirements-lock.txt"

UNSAFE_LOADERS = tuple("".join(parts) for parts in (("pic", "kle"), ("job", "lib"), ("torch", ".load")))


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
    from tierwise.service.app import create_app
    from tierwise.service.classifier import load_tier_classifier

    canary = f"{CANARY_PREFIX}{uuid.uuid4().hex[:12]}"
    settings = in_process_settings(model_dir, onnx_threads=1, max_batch_items=4)
    faulty = ControllableClassifier(load_tier_classifier(settings))
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
