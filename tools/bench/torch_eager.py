"""The PyTorch eager comparison, and the untrained stand-in model served when a folder has none.

torch, transformers and the training code are imported inside the functions only: the rest of the
benchmark runs without them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tierwise.core.model_folder import TOKENIZER_FILE, load_manifest
from tierwise.core.text_encoding import TextEncoder
from tierwise.service.settings import get_settings


class TorchEagerClassifier:
    """The same tokenizer, truncation and calibration as the ONNX classifier, in PyTorch eager."""

    def __init__(self, model_dir: Path, checkpoint: Path | None, threads: int = 0) -> None:
        import torch
        from tierwise.training.base_model import base_model_path
        from transformers import AutoModelForSequenceClassification

        if threads > 0:
            torch.set_num_threads(threads)
        self.torch = torch
        self.model_dir = model_dir
        self.manifest = load_manifest(model_dir)
        self.tiers = self.manifest.tiers
        self.version = f"{self.manifest.version}+torch-eager"
        self.encoder = TextEncoder.from_file(model_dir / TOKENIZER_FILE, self.manifest.truncation)
        self.trained = checkpoint is not None and checkpoint.is_dir()
        source = checkpoint if self.trained and checkpoint is not None else base_model_path()
        self.model = AutoModelForSequenceClassification.from_pretrained(
            str(source), num_labels=len(self.tiers)
        ).eval()

    def count_tokens(self, texts: list[str]) -> list[int]:
        return self.encoder.count_tokens(texts)

    def predict_proba(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        batch = self.encoder.encode(texts)
        with self.torch.inference_mode():
            logits = self.model(
                input_ids=self.torch.from_numpy(batch.input_ids),
                attention_mask=self.torch.from_numpy(batch.attention_mask),
            ).logits.numpy()
        scaled = logits.astype(np.float64) / self.manifest.temperature
        scaled -= scaled.max(axis=-1, keepdims=True)
        probabilities = np.exp(scaled)
        return probabilities / probabilities.sum(axis=-1, keepdims=True), batch.token_counts


def serve_torch(checkpoint: Path | None) -> None:
    """Run the service with the PyTorch eager classifier (used as a subprocess by the benchmark)."""
    import uvicorn
    from tierwise.service.app import create_app
    from tierwise.service.logs import configure_logging, uvicorn_log_config

    settings = get_settings()
    configure_logging(settings.log_level)
    app = create_app(
        settings,
        classifier_factory=lambda s: TorchEagerClassifier(s.model_dir, checkpoint, s.onnx_threads),
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=uvicorn_log_config(settings.log_level),
        access_log=False,
    )


def build_stand_in_model(folder: Path, tiers: Sequence[str]) -> Path:
    """An untrained-head MiniLM-L6 exported as training does (tierwise.training.export_onnx: fp32,
    opset 17, eager attention): the same cost as a trained model, no skill."""
    from tierwise.training.base_model import base_model_path
    from tierwise.training.export_onnx import export_fp32
    from transformers import AutoModelForSequenceClassification

    folder.mkdir(parents=True, exist_ok=True)
    base = base_model_path()
    model = AutoModelForSequenceClassification.from_pretrained(
        str(base), num_labels=len(tiers), attn_implementation="eager"
    ).eval()
    export_fp32(model, folder / "model.onnx")
    (folder / "tokenizer.json").write_bytes((base / "tokenizer.json").read_bytes())
    manifest = {
        "name": "stand-in-untrained",
        "tiers": list(tiers),
        "max_length": 256,
        "truncation": {"head_tokens": 190, "tail_tokens": 64, "max_chars": 8000},
        "temperature": 1.0,
        "escalation": {"q": 0.7, "target_under_routing": 0.05},
        "data_hash": "none",
        "git_commit": "none",
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return folder
