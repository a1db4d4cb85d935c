"""What the uvicorn workers of one server share: a reload generation and which model each serves.

With several workers, `serve()` sets `TIERWISE_SHARED_DIR` to a folder made for this start. In it:

- `reload.json`: `{"generation": n, "model_dir": ...}`, bumped by the worker that receives
  `POST /admin/reload`; every worker polls the file's status (one `stat` every 0.5 s) and reloads
  when the generation is newer than the one it serves. A worker started later (after a crash or a
  SIGHUP) loads the folder of the latest generation.
- `workers/<pid>.json`: the model version and generation each live worker serves (`GET /model`).

With one process there is no folder: the reload reaches the only worker, and the status is its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHARED_DIR_ENV = "TIERWISE_SHARED_DIR"
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Generation:
    number: int
    model_dir: str | None


def shared_dir() -> Path | None:
    value = os.environ.get(SHARED_DIR_ENV)
    return Path(value) if value else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(data), encoding="utf-8")
    os.replace(partial, path)  # readers see the old file or the new one, never half of one


def read_generation(folder: Path) -> Generation:
    try:
        data = json.loads((folder / "reload.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Generation(0, None)
    return Generation(int(data.get("generation", 0)), data.get("model_dir"))


def bump_generation(folder: Path, model_dir: str | None) -> Generation:
    """The next generation, for every worker to load (`model_dir`: None = each one's current folder)."""
    with open(folder / "reload.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = read_generation(folder)
        # A reload without a folder keeps the folder of an earlier reload that named one.
        following = Generation(current.number + 1, model_dir or current.model_dir)
        _write_json(
            folder / "reload.json",
            {
                "generation": following.number,
                "model_dir": following.model_dir,
                "by_pid": os.getpid(),
                "at": time.time(),
            },
        )
    return following


def generation_stamp(folder: Path) -> tuple[int, int] | None:
    """A cheap token that changes whenever reload.json is replaced."""
    try:
        status = os.stat(folder / "reload.json")
    except OSError:
        return None
    return status.st_ino, status.st_mtime_ns


def write_worker_status(folder: Path, model_version: str, generation: int, model_dir: str) -> None:
    (folder / "workers").mkdir(exist_ok=True)
    record = {
        "pid": os.getpid(),
        "model_version": model_version,
        "generation": generation,
        "model_dir": model_dir,
    }
    _write_json(folder / "workers" / f"{os.getpid()}.json", record)


def remove_worker_status(folder: Path) -> None:
    with contextlib.suppress(OSError):
        (folder / "workers" / f"{os.getpid()}.json").unlink()


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists (someone else's counts: signal 0 only asks)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_statuses(folder: Path) -> list[dict[str, Any]]:
    """The status of each live worker, by pid (files of workers that died are removed)."""
    statuses = []
    for path in sorted((folder / "workers").glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not process_alive(int(record.get("pid", 0))):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        statuses.append(record)
    return sorted(statuses, key=lambda record: record["pid"])
