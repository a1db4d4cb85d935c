"""The model folder contract: what `models/<name>/` holds and how its manifest is read.

A folder holds `model.onnx`, `tokenizer.json` and `manifest.json`. The manifest describes
everything serving needs (tiers in order, max length, truncation, temperature, escalation q and
tier offsets);
training writes it, serving only reads it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tierwise.core.escalation import EscalationQ, boundary_thresholds

MANIFEST_FILE = "manifest.json"
ONNX_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"


class ModelFolderError(ValueError):
    """The model folder is missing, incomplete or inconsistent; the message says what to fix."""


TRUNCATION_STRATEGIES = ("head_tail", "task_first")


@dataclass(frozen=True)
class Truncation:
    """How a request becomes at most `head_tokens + tail_tokens` content tokens.

    `task_first`: the task (last user turn) is encoded first, keeping its head and tail, and the
    head of a sketch of the context follows after a [SEP], at most `context_tokens` of it: the task
    always keeps `head_tokens + tail_tokens - 1 - context_tokens` tokens or more. `head_tail` (models before task_first): the
    whole conversation as one text, context first, keeping its first `head_tokens` and last
    `tail_tokens` tokens.
    """

    head_tokens: int
    tail_tokens: int
    # Texts longer than this many characters are clipped (head and tail) before tokenizing,
    # so a 10 MB prompt never costs 10 MB of tokenization.
    max_chars: int = 8000
    strategy: str = "head_tail"
    context_tokens: int = 0

    @property
    def content_tokens(self) -> int:
        """Tokens of text the encoder reads, special tokens excluded."""
        return self.head_tokens + self.tail_tokens


@dataclass(frozen=True)
class Manifest:
    """What serving reads from `manifest.json` (the rest of the file is kept in `raw`)."""

    name: str
    tiers: tuple[str, ...]
    max_length: int
    truncation: Truncation
    temperature: float
    escalation_q: EscalationQ  # one threshold, or one per tier boundary
    target_under_routing: float
    # argmax(log P + offsets) is the most likely tier (`tierwise.core.escalation`); zeros: plain argmax.
    tier_offsets: tuple[float, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def version(self) -> str:
        """A short version string: the folder name and the data/code it was trained from."""
        git = str(self.raw.get("git_commit", "unknown"))[:8]
        data = str(self.raw.get("data_hash", "unknown"))[:8]
        return f"{self.name}@{git}-{data}"


def _require(raw: dict[str, Any], key: str, path: Path) -> Any:
    if key not in raw:
        raise ModelFolderError(f"{path} has no '{key}'; re-export the model with `make train`.")
    return raw[key]


def parse_manifest(raw: dict[str, Any], path: Path) -> Manifest:
    """Validate a manifest dict; raise ModelFolderError naming the bad field."""
    tiers = tuple(_require(raw, "tiers", path))
    if len(tiers) < 2 or len(set(tiers)) != len(tiers):
        raise ModelFolderError(f"{path}: 'tiers' must list at least two distinct tiers, got {tiers}.")
    max_length = int(_require(raw, "max_length", path))
    trunc = _require(raw, "truncation", path)
    truncation = Truncation(
        head_tokens=int(trunc["head_tokens"]),
        tail_tokens=int(trunc["tail_tokens"]),
        max_chars=int(trunc.get("max_chars", 8000)),
        strategy=str(trunc.get("strategy", "head_tail")),
        context_tokens=int(trunc.get("context_tokens", 0)),
    )
    if truncation.head_tokens + truncation.tail_tokens + 2 > max_length:
        raise ModelFolderError(
            f"{path}: head_tokens + tail_tokens + 2 special tokens exceed max_length {max_length}."
        )
    if truncation.strategy not in TRUNCATION_STRATEGIES:
        raise ModelFolderError(
            f"{path}: truncation.strategy {truncation.strategy!r} is not one of {TRUNCATION_STRATEGIES}; "
            "this tierwise is older than the model: upgrade it, or use a model it knows."
        )
    if not 0 <= truncation.context_tokens < truncation.content_tokens:
        raise ModelFolderError(
            f"{path}: truncation.context_tokens must be in [0, head_tokens + tail_tokens)."
        )
    temperature = float(_require(raw, "temperature", path))
    if temperature <= 0:
        raise ModelFolderError(f"{path}: temperature must be > 0, got {temperature}.")
    escalation = _require(raw, "escalation", path)
    raw_q = escalation["q"]
    q: EscalationQ = tuple(float(v) for v in raw_q) if isinstance(raw_q, list) else float(raw_q)
    try:
        boundary_thresholds(q, len(tiers))
    except ValueError as err:
        raise ModelFolderError(f"{path}: escalation.{err}.") from err
    offsets = tuple(float(o) for o in escalation.get("tier_offsets", [0.0] * len(tiers)))
    if len(offsets) != len(tiers) or not all(math.isfinite(o) for o in offsets):
        raise ModelFolderError(
            f"{path}: escalation.tier_offsets must be {len(tiers)} finite numbers (one per tier), got {offsets}."
        )
    return Manifest(
        name=str(raw.get("name", path.parent.name)),
        tiers=tiers,
        max_length=max_length,
        truncation=truncation,
        temperature=temperature,
        escalation_q=q,
        target_under_routing=float(escalation.get("target_under_routing", 0.05)),
        tier_offsets=offsets,
        raw=raw,
    )


def load_manifest(model_dir: Path) -> Manifest:
    """Read and validate `model_dir/manifest.json`, checking the files it needs exist."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelFolderError(
            f"Model folder {model_dir} does not exist; pass --model or set TIERWISE_MODEL_DIR, or run `make train`."
        )
    for needed in (MANIFEST_FILE, ONNX_FILE, TOKENIZER_FILE):
        if not (model_dir / needed).is_file():
            raise ModelFolderError(f"{model_dir} has no {needed}; re-export it with `make train`.")
    path = model_dir / MANIFEST_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelFolderError(f"{path} is not valid JSON ({err}); re-export the model.") from err
    return parse_manifest(raw, path)
