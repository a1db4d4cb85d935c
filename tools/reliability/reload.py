"""Hot reload: swap the model folder under load (SIGHUP or POST /admin/reload) without a failed
request, and an admin reload sent to one worker reaches all of them."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from tierwise.core.model_folder import load_manifest

from tools.harness import ServedProcess, http_get, http_post, raw_request
from tools.reliability.fixtures import VERSION_RE, point_symlink, request_bodies, start_server, variant_folder
from tools.reliability.load import LoadStats, drive_load
from tools.reliability.report import CaseResult


async def load_across_reload(
    server: ServedProcess,
    raw: list[bytes],
    concurrency: int,
    seconds: float,
    max_seconds: float,
    swap: Callable[[], Awaitable[None]],
) -> LoadStats:
    """Load for `seconds` (then on until the last 4 × `concurrency` answers all come from the new
    model, or `max_seconds`), calling `swap` a quarter of the way in."""
    window = 4 * concurrency

    def switched(stats: LoadStats) -> bool:
        recent = stats.versions[-window:]
        return len(recent) == window and all("reloadv2" in version for _, version in recent)

    load = asyncio.create_task(
        drive_load(server.port, raw, concurrency, seconds=seconds, until=switched, max_seconds=max_seconds)
    )
    await asyncio.sleep(seconds / 4)
    await swap()
    return await load


def reload_verdict(
    stats: LoadStats,
    method: str,
    workers: int,
    concurrency: int,
    seconds: float,
    exit_code: int,
    problems: list[str],
) -> CaseResult:
    """Passes when nothing failed and the answers went from the first model to the second for good."""
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

    async def swap() -> None:
        point_symlink(current, second)
        if method == "sighup":
            server.process.send_signal(signal.SIGHUP)
            return
        status, body = await asyncio.to_thread(
            http_post, server.port, "/admin/reload", {}, {"X-Admin-Token": token}
        )
        if status != 200:
            problems.append(f"POST /admin/reload answered {status} {body[:200].decode(errors='replace')}")

    try:
        server.wait_until_ready(workers=workers)
        bodies, _ = request_bodies(prompts)
        raw = [raw_request(server.port, "/classify", body) for body in bodies]
        stats = asyncio.run(load_across_reload(server, raw, concurrency, seconds, max_seconds, swap))
    finally:
        exit_code = server.stop()
    return reload_verdict(stats, method, workers, concurrency, seconds, exit_code, problems)


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
        server.wait_until_ready(workers=workers)
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
