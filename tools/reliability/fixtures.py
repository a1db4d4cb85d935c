"""What the cases set up: model folder variants, settings of an in-process app, a served process
whose decision log stays beside its log, request bodies with a canary word."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tierwise.core.estimator import ESTIMATOR_FILE
from tierwise.core.model_folder import MANIFEST_FILE, ONNX_FILE, TOKENIZER_FILE
from tierwise.service.settings import Settings

from tools.harness import ServedProcess, start_service

VERSION_RE = re.compile(rb'"model_version":\s*"([^"]*)"')
CANARY_PREFIX = "tierwise-canary-"


def in_process_settings(model_dir: Path, **overrides: Any) -> Settings:
    """Settings for an in-process app: one onnxruntime thread, no decision log on disk."""
    values: dict[str, Any] = {"model_dir": model_dir, "onnx_threads": 1, "record_decisions": False}
    values.update(overrides)
    return Settings(**values)


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


def start_server(
    model_dir: Path, log_path: Path, command: Sequence[str] | None = None, **settings: object
) -> ServedProcess:
    """The service (tools/harness.py) with exactly these TIERWISE_* settings, none of the caller's; its
    decision log (when it keeps one) goes next to the server log, not into runs/."""
    settings = {"decision_db": f"sqlite:///{log_path.with_suffix('.sqlite')}", **settings}
    return start_service(model_dir, log_path, command, inherit_settings=False, **settings)
