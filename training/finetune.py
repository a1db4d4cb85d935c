"""Fine-tune a BERT-sized encoder on allowed-tier sets with the Hugging Face Trainer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tierwise.training.base_model import TINY_RANDOM, base_model_path
from tierwise.training.labels import TIER_INDEX, TIERS
from torch.utils.data import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    Trainer,
)


def load_model(
    base_model: str, seed: int, layers: int | None = None, init_from: Path | None = None
) -> BertForSequenceClassification:
    """The base model (or the checkpoint `init_from`), cut to its first `layers` encoder layers."""
    model = _load_full_model(base_model, seed, init_from)
    if layers is not None:
        encoder_layers = model.bert.encoder.layer
        if layers > len(encoder_layers):
            raise ValueError(f"layers={layers}, but the model has only {len(encoder_layers)}")
        model.bert.encoder.layer = encoder_layers[:layers]
        model.config.num_hidden_layers = layers  # saved with the checkpoint: the export rebuilds it
    return model


def _load_full_model(base_model: str, seed: int, init_from: Path | None) -> BertForSequenceClassification:
    """A sequence classifier with a new 3-tier head. It trains with SDPA attention (faster, less memory on
    a CPU); the export reloads the checkpoint with eager attention, the graph onnxruntime can fuse."""
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
        str(init_from or base_model_path()),
        num_labels=len(TIERS),
        id2label=id2label,
        label2id=label2id,
        attn_implementation="sdpa",
    )


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
    """Pre-tokenized rows: ids (already truncated), the ids of the same row wrapped the way an app
    would send it (its twin), allowed-tier mask, weight."""

    def __init__(
        self,
        ids: list[list[int]],
        twin_ids: list[list[int]],
        masks: list[list[float]],
        weights: np.ndarray,
        teacher_probs: np.ndarray | None = None,
    ) -> None:
        if not len(ids) == len(twin_ids) == len(masks) == len(weights):
            raise ValueError("ids, twin ids, masks and weights must have one entry per row")
        if teacher_probs is not None and len(teacher_probs) != len(ids):
            raise ValueError("teacher probabilities must have one row per training row")
        self.ids, self.twin_ids, self.masks, self.weights = ids, twin_ids, masks, weights
        self.teacher_probs = teacher_probs

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        item = {
            "input_ids": self.ids[i],
            "twin_ids": self.twin_ids[i],
            "allowed_mask": self.masks[i],
            "weight": float(self.weights[i]),
        }
        if self.teacher_probs is not None:
            item["teacher_probs"] = self.teacher_probs[i].tolist()
        return item


def pad_ids(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (B, T) padded to the longest row and its attention mask (B, T)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        attention[i, : len(r)] = 1
    return ids, attention


@dataclass
class PaddingCollator:
    """Dynamic padding: each batch is padded to its own longest row."""

    pad_id: int

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        ids, attention = pad_ids([r["input_ids"] for r in rows], self.pad_id)
        batch = {
            "input_ids": ids,
            "attention_mask": attention,
            "allowed_mask": torch.tensor([r["allowed_mask"] for r in rows]),
            "weight": torch.tensor([r["weight"] for r in rows]),
        }
        if "teacher_probs" in rows[0]:
            batch["teacher_probs"] = torch.tensor([r["teacher_probs"] for r in rows], dtype=torch.float32)
        if "twin_ids" in rows[0]:
            batch["twin_ids"], batch["twin_attention_mask"] = pad_ids(
                [r["twin_ids"] for r in rows], self.pad_id
            )
        return batch


def allowed_set_loss(logits: torch.Tensor, allowed: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """-log sum_{t in allowed} p(t), weighted. logits (B, K), allowed (B, K) 0/1, weight (B,)."""
    log_p = torch.log_softmax(logits, dim=-1)
    log_allowed = torch.logsumexp(log_p.masked_fill(allowed <= 0, float("-inf")), dim=-1)  # (B,)
    return -(log_allowed * weight).sum() / weight.sum()


def consistency_loss(plain: torch.Tensor, wrapped: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """KL(p_plain || p_wrapped), weighted; the plain prediction is the target (no gradient), so
    the wrapper learns to change nothing. plain, wrapped (B, K) logits, weight (B,)."""
    target = torch.log_softmax(plain.detach(), dim=-1)
    log_q = torch.log_softmax(wrapped, dim=-1)
    kl = (target.exp() * (target - log_q)).sum(dim=-1)  # (B,)
    return (kl * weight).sum() / weight.sum()


def distillation_loss(
    teacher_probs: torch.Tensor, student: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """KL(teacher || student), weighted. teacher_probs (B, K) calibrated probabilities, student (B, K)
    logits, weight (B,): the student learns where the teacher is unsure, not only its argmax."""
    target = teacher_probs.clamp_min(1e-8)
    kl = (target * (target.log() - torch.log_softmax(student, dim=-1))).sum(dim=-1)  # (B,)
    return (kl * weight).sum() / weight.sum()


class AllowedSetTrainer(Trainer):
    """Allowed-set loss on each row and on its wrapped twin, plus a consistency term between them,
    plus (for a student) a distillation term towards the teacher's probabilities."""

    def __init__(
        self, *args: object, consistency_weight: float = 1.0, distill_weight: float = 1.0, **kwargs: object
    ) -> None:
        super().__init__(*args, **kwargs)
        self.consistency_weight = consistency_weight
        self.distill_weight = distill_weight

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict,
        return_outputs: bool = False,
        num_items_in_batch: object = None,
    ) -> torch.Tensor | tuple:
        allowed, weight = inputs.pop("allowed_mask"), inputs.pop("weight")
        twin_ids, twin_mask = inputs.pop("twin_ids", None), inputs.pop("twin_attention_mask", None)
        teacher_probs = inputs.pop("teacher_probs", None)
        outputs = model(**inputs)
        loss = allowed_set_loss(outputs.logits, allowed, weight)
        if twin_ids is not None:
            twin = model(input_ids=twin_ids, attention_mask=twin_mask).logits
            loss = (loss + allowed_set_loss(twin, allowed, weight)) / 2
            loss = loss + self.consistency_weight * consistency_loss(outputs.logits, twin, weight)
        if teacher_probs is not None:
            loss = loss + self.distill_weight * distillation_loss(teacher_probs, outputs.logits, weight)
        return (loss, outputs) if return_outputs else loss
