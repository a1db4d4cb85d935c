"""Fine-tune a BERT-sized encoder on allowed-tier sets with the Hugging Face Trainer."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tierwise.training.base_model import TINY_RANDOM, base_model_path
from tierwise.training.labels import TIER_INDEX, TIERS
from torch.utils.data import Dataset, Sampler
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


@dataclass(frozen=True)
class DifficultyTargets:
    """What the item-response fit says of each training row (training/difficulty_targets.py).

    soft (N, K): P(cheapest sufficient tier = k), rows of NaN where the row has no fit (its
    allowed-tier set is the target then); rank_key (N,): how hard the row is inside its source,
    NaN where unknown (compared only with rows of the same source); source_ids (N,) ints."""

    soft: np.ndarray
    rank_key: np.ndarray
    source_ids: np.ndarray

    @classmethod
    def from_rows(cls, rows: list[dict]) -> DifficultyTargets:
        soft = np.full((len(rows), len(TIERS)), np.nan)
        for i, r in enumerate(rows):
            if r.get("soft_target") is not None:
                soft[i] = r["soft_target"]
        sources = sorted({r["source"] for r in rows})
        index = {s: i for i, s in enumerate(sources)}
        return cls(
            soft=soft,
            rank_key=np.array([rank_key(r) for r in rows], dtype=np.float64),
            source_ids=np.array([index[r["source"]] for r in rows], dtype=np.int64),
        )


def rank_key(row: dict) -> float:
    """How hard a row is inside its source: the fitted difficulty where there is one, else the
    source's own ordinal level (MATH levels), else the cheapest allowed tier's index."""
    if row.get("difficulty") is not None:
        return float(row["difficulty"])
    if row.get("level") is not None:
        return float(row["level"])
    allowed = row.get("allowed_tiers") or []
    return float(min(TIER_INDEX[t] for t in allowed)) if allowed else float("nan")


class TierDataset(Dataset):
    """Pre-tokenized rows: ids (already truncated), the ids of the same row wrapped the way an app
    would send it (its twin), allowed-tier mask, weight, and the difficulty targets when given."""

    def __init__(
        self,
        ids: list[list[int]],
        twin_ids: list[list[int]],
        masks: list[list[float]],
        weights: np.ndarray,
        teacher_probs: np.ndarray | None = None,
        targets: DifficultyTargets | None = None,
    ) -> None:
        if not len(ids) == len(twin_ids) == len(masks) == len(weights):
            raise ValueError("ids, twin ids, masks and weights must have one entry per row")
        if teacher_probs is not None and len(teacher_probs) != len(ids):
            raise ValueError("teacher probabilities must have one row per training row")
        if targets is not None and len(targets.soft) != len(ids):
            raise ValueError("difficulty targets must have one row per training row")
        self.ids, self.twin_ids, self.masks, self.weights = ids, twin_ids, masks, weights
        self.teacher_probs = teacher_probs
        self.targets = targets

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
        if self.targets is not None:
            item["soft_target"] = self.targets.soft[i].tolist()
            item["rank_key"] = float(self.targets.rank_key[i])
            item["source_id"] = int(self.targets.source_ids[i])
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
        if "soft_target" in rows[0]:
            batch["soft_target"] = torch.tensor([r["soft_target"] for r in rows], dtype=torch.float32)
            batch["rank_key"] = torch.tensor([r["rank_key"] for r in rows], dtype=torch.float32)
            batch["source_id"] = torch.tensor([r["source_id"] for r in rows], dtype=torch.long)
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


def tier_loss(
    logits: torch.Tensor, allowed: torch.Tensor, soft: torch.Tensor | None, weight: torch.Tensor
) -> torch.Tensor:
    """Weighted mean over rows of: cross-entropy to the soft target where the row has one (a
    distribution from many models' verdicts), else -log P(allowed set). logits, allowed, soft (B, K);
    soft rows of NaN mean "no soft target"; weight (B,)."""
    log_p = torch.log_softmax(logits, dim=-1)
    per_row = -torch.logsumexp(log_p.masked_fill(allowed <= 0, float("-inf")), dim=-1)  # (B,)
    if soft is not None:
        has_soft = ~torch.isnan(soft).any(dim=-1)  # (B,)
        cross_entropy = -(torch.nan_to_num(soft) * log_p).sum(dim=-1)  # (B,)
        per_row = torch.where(has_soft, cross_entropy, per_row)
    return (per_row * weight).sum() / weight.sum()


def above_fast_score(logits: torch.Tensor) -> torch.Tensor:
    """(B,) log-odds that `fast` does not suffice: log P(tier > fast) - log P(fast). logits (B, K)."""
    log_p = torch.log_softmax(logits, dim=-1)
    return torch.logsumexp(log_p[:, 1:], dim=-1) - log_p[:, 0]


def within_source_ranking_loss(
    logits: torch.Tensor, source_id: torch.Tensor, rank_key: torch.Tensor, margin: float
) -> torch.Tensor:
    """Pairwise logistic loss over pairs of one source: the harder row (rank_key larger by more than
    `margin`) must score higher on P(tier > fast). Pairs across sources are never compared, so naming
    the source earns nothing here. logits (B, K), source_id (B,), rank_key (B,) with NaN = unknown."""
    score = above_fast_score(logits)  # (B,)
    known = ~torch.isnan(rank_key)
    key = torch.nan_to_num(rank_key)
    harder = (key[:, None] - key[None, :]) > margin  # (B, B): row i is harder than row j
    pairs = harder & (source_id[:, None] == source_id[None, :]) & known[:, None] & known[None, :]
    if not bool(pairs.any()):
        return score.sum() * 0.0  # keeps the graph (and the loss's device) when a batch has no pair
    return torch.nn.functional.softplus(score[None, :] - score[:, None])[pairs].mean()


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


class SourceBalancedSampler(Sampler[int]):
    """Batches of `sources_per_batch` sources with `batch_size / sources_per_batch` rows each.

    Sources are drawn with probability proportional to n_s ** `temperature` (0: uniform, 1: as in
    the data), so a large single-label source no longer dominates, and every batch holds rows of
    one source side by side: the pairs the within-source ranking term compares. Each epoch has as
    many rows as the dataset and a new seeded order."""

    def __init__(
        self,
        source_ids: np.ndarray,
        batch_size: int,
        sources_per_batch: int,
        seed: int,
        temperature: float = 0.5,
    ) -> None:
        if batch_size % sources_per_batch:
            raise ValueError("batch_size must be a multiple of sources_per_batch")
        self.by_source = [np.flatnonzero(source_ids == s) for s in np.unique(source_ids)]
        sizes = np.array([len(rows) for rows in self.by_source], dtype=np.float64)
        self.source_p = sizes**temperature / (sizes**temperature).sum()
        self.batch_size, self.per_source = batch_size, batch_size // sources_per_batch
        self.sources_per_batch = min(sources_per_batch, len(self.by_source))
        self.length, self.seed, self.epoch = len(source_ids), seed, 0

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        streams = [rng.permutation(rows) for rows in self.by_source]
        cursor = [0] * len(streams)
        order: list[int] = []
        while len(order) < self.length:
            chosen = rng.choice(len(streams), self.sources_per_batch, replace=False, p=self.source_p)
            for s in chosen:
                for _ in range(self.per_source):  # each source's rows cycle, reshuffled on each pass
                    if cursor[s] == len(streams[s]):
                        streams[s], cursor[s] = rng.permutation(streams[s]), 0
                    order.append(int(streams[s][cursor[s]]))
                    cursor[s] += 1
        return iter(order[: self.length])


class AllowedSetTrainer(Trainer):
    """Tier loss (soft targets where the row has them, else the allowed set) on each row and on its
    wrapped twin, a consistency term between them, a within-source ranking term, and (for a
    student) a distillation term towards the teacher's probabilities. With `sampler` the batches
    are source-balanced (SourceBalancedSampler)."""

    def __init__(
        self,
        *args: object,
        consistency_weight: float = 1.0,
        distill_weight: float = 1.0,
        ranking_weight: float = 0.0,
        ranking_margin: float = 0.5,
        sampler: Sampler[int] | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.consistency_weight = consistency_weight
        self.distill_weight = distill_weight
        self.ranking_weight = ranking_weight
        self.ranking_margin = ranking_margin
        self.sampler = sampler

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> Sampler[int] | None:
        return self.sampler if self.sampler is not None else super()._get_train_sampler(train_dataset)

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
        soft, rank, source = (
            inputs.pop("soft_target", None),
            inputs.pop("rank_key", None),
            inputs.pop("source_id", None),
        )
        outputs = model(**inputs)
        loss = tier_loss(outputs.logits, allowed, soft, weight)
        if twin_ids is not None:
            twin = model(input_ids=twin_ids, attention_mask=twin_mask).logits
            loss = (loss + tier_loss(twin, allowed, soft, weight)) / 2
            loss = loss + self.consistency_weight * consistency_loss(outputs.logits, twin, weight)
        if self.ranking_weight and rank is not None and source is not None:
            ranking = within_source_ranking_loss(outputs.logits, source, rank, self.ranking_margin)
            loss = loss + self.ranking_weight * ranking
        if teacher_probs is not None:
            loss = loss + self.distill_weight * distillation_loss(teacher_probs, outputs.logits, weight)
        return (loss, outputs) if return_outputs else loss
