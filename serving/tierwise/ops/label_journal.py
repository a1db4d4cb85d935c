"""The append-only journal of paid calls behind `tierwise label`: what makes a run resumable.

Every completed call is one JSON line keyed by a SHA-256 of (role, model, messages, parameters),
written and flushed (to the OS, which keeps it when the process is killed) before the call counts
as done. A later run reads the journal first and takes
every call it finds there from it, so a killed run continues where it stopped and no call is paid
twice. A line cut short by a kill is ignored. Prompts and answers stay in this local file.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

from tierwise.evidence.llm_api import Completion


def call_key(role: str, model: str, messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    payload = json.dumps(
        {"role": role, "model": model, "messages": messages, "params": params},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class Journal:
    """Completed calls by key, backed by a JSONL file that only grows."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.entries: dict[str, dict[str, Any]] = {}
        self.torn_lines = 0
        self._lock = threading.Lock()
        self._load()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def _load(self) -> None:
        if not self.path.is_file():
            return
        with open(self.path, encoding="utf-8", errors="replace") as stream:
            for line in stream:
                try:
                    entry = json.loads(line)
                    self.entries[str(entry["key"])] = entry
                except (json.JSONDecodeError, KeyError, TypeError):
                    self.torn_lines += 1

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str) -> Completion | None:
        entry = self.entries.get(key)
        return None if entry is None else Completion.from_json(entry["completion"])

    def add(self, key: str, role: str, model: str, completion: Completion, cost_usd: float) -> None:
        entry = {
            "key": key,
            "role": role,
            "model": model,
            "completion": completion.to_json(),
            "cost_usd": cost_usd,
        }
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()  # in the OS once flushed: a killed process loses nothing
            self.entries[key] = entry

    def close(self) -> None:
        with self._lock:
            self._file.close()
