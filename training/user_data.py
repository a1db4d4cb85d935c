"""Read an ML engineer's own labeled traffic (JSONL) into the same rows as the public sources.

Each line: `text` or OpenAI-style `messages`; `tier` or `allowed_tiers`; optional `source`,
`weight`, `lang`. A malformed row is reported with its file and line number, never dropped silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tierwise.core.request_text import RequestTextError, record_text
from tierwise.training.labels import validate_allowed
from tierwise.training.sources import LabeledPrompt


@dataclass(frozen=True)
class MalformedRow:
    path: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


def parse_user_row(record: object, default_source: str) -> LabeledPrompt:
    """One JSON object to a LabeledPrompt; raises ValueError saying which field is wrong."""
    if not isinstance(record, dict):
        raise ValueError("row must be a JSON object")
    try:
        text = record_text(record)
    except RequestTextError as err:
        raise ValueError(str(err)) from err
    if "allowed_tiers" in record:
        tiers = record["allowed_tiers"]
        if not isinstance(tiers, list) or not all(isinstance(t, str) for t in tiers):
            raise ValueError("'allowed_tiers' must be a list of tier names")
    elif "tier" in record:
        if not isinstance(record["tier"], str):
            raise ValueError("'tier' must be a tier name string")
        tiers = [record["tier"]]
    else:
        raise ValueError("row needs 'tier' or 'allowed_tiers'")
    allowed = validate_allowed(tiers)
    weight = record.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
        raise ValueError(f"'weight' must be a positive number, got {weight!r}")
    source = record.get("source", default_source)
    if not isinstance(source, str) or not source:
        raise ValueError("'source' must be a non-empty string")
    lang = record.get("lang", "en")
    request = None
    if record.get("text") is None:  # a conversation: keep its shape for training
        request = {
            "messages": record["messages"],
            **({"tools": record["tools"]} if record.get("tools") else {}),
        }
    return LabeledPrompt(text, allowed, source, "user", float(weight), str(lang), request)


def read_user_jsonl(path: Path) -> tuple[list[LabeledPrompt], list[MalformedRow]]:
    """All good rows and every malformed one (with its line number)."""
    rows: list[LabeledPrompt] = []
    errors: list[MalformedRow] = []
    default_source = f"user:{path.stem}"
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
                rows.append(parse_user_row(record, default_source))
            except UnicodeDecodeError:
                errors.append(MalformedRow(path, number, "not valid UTF-8"))
            except json.JSONDecodeError as err:
                errors.append(MalformedRow(path, number, f"invalid JSON ({err.msg})"))
            except ValueError as err:
                errors.append(MalformedRow(path, number, str(err)))
    return rows, errors
