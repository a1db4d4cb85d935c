"""`make train`: fine-tune -> export ONNX (parity) -> int8 (gated) -> calibrate -> choose q -> report.

    python -m tierwise.training.train                          # the default model, on data/processed
    python -m tierwise.training.train --name mine --epochs 3   # another model folder under models/
    python -m tierwise.training.train --base-model tiny-random --max-steps 5   # a smoke run (tests)

Reads the splits written by `make data`; writes models/<name>/ (model.onnx, tokenizer.json,
manifest.json, report/) and keeps the PyTorch checkpoint under runs/<name>/.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
from tierwise.core.classifier import TierClassifier
from tierwise.core.escalation import EscalationQ
from tierwise.core.model_folder import ONNX_FILE
from tierwise.core.policy_file import load_policy
from tierwise.core.request_text import ClassifierInput, request_input
from tierwise.core.text_encoding import TextEncoder
from tierwise.training import paths, thresholds
from tierwise.training.assessment import (
    allowed_matrix,
    batched_logits,
    evaluate_all,
    fitted_baselines,
    headline_metrics,
)
from tierwise.training.base_model import tokenizer_path
from tierwise.training.build_dataset import row_input
from tierwise.training.calibration import TemperatureScaler
from tierwise.training.config import TrainConfig
from tierwise.training.difficulty_targets import is_hard
from tierwise.training.estimator import build_estimator
from tierwise.training.evaluation import allowed_bounds, load_prices
from tierwise.training.finetune import (
    AllowedSetTrainer,
    DifficultyTargets,
    PaddingCollator,
    SourceBalancedSampler,
    TierDataset,
    class_balance_weights,
    load_model,
)
from tierwise.training.invariance import evaluate_invariance
from tierwise.training.labels import TIERS, allowed_mask
from tierwise.training.packaging import assemble_folder, base_manifest, export_and_gate, write_manifest
from tierwise.training.report import write_report
from tierwise.training.source_groups import source_group
from tierwise.training.within_source import within_source_report, write_within_source
from tierwise.training.wrappers import WrapperLibrary
from tokenizers import Tokenizer

log = logging.getLogger("tierwise.train")


def read_split(data_dir: Path, split: str) -> list[dict]:
    path = data_dir / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `make data` first (or pass --data-dir).")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def wrapped_twins(train_rows: list[dict], seed: int) -> list[ClassifierInput]:
    """Each row as an app would send it, wrapped by a training wrapper (the label is unchanged:
    a system prompt or a format rule does not change what the task needs)."""
    library = WrapperLibrary.load("train")
    rng = random.Random(seed)
    return [request_input(library.sample(r["text"], rng)) for r in train_rows]


def teacher_probabilities(config: TrainConfig, train_rows: list[dict]) -> np.ndarray | None:
    """The teacher model folder's calibrated probabilities (N, K) on the plain training rows, through
    the serving code path (its own encoding and temperature); None without a teacher."""
    if config.teacher is None:
        return None
    teacher = TierClassifier(config.teacher)
    if teacher.tiers != TIERS:
        raise ValueError(f"the teacher {config.teacher} routes {teacher.tiers}, not {TIERS}")
    log.info("teacher %s: scoring %d training rows", teacher.version, len(train_rows))
    probabilities, _ = teacher.predict_proba(
        [row_input(r) for r in train_rows]
    )  # length-sorted chunks inside
    return probabilities


def source_information_weights(rows: list[dict], uninformative: float) -> np.ndarray:
    """(N,) `uninformative` for rows of a source whose labels say nothing inside it (one allowed set
    for every row and no fitted difficulty that varies), else 1: such rows teach which benchmark a
    prompt looks like, not how hard it is."""
    labels: dict[str, set] = defaultdict(set)
    for r in rows:
        key = r.get("difficulty")
        labels[r["source"]].add(("d", round(key, 3)) if key is not None else tuple(r["allowed_tiers"]))
    informative = {source: len(seen) > 1 for source, seen in labels.items()}
    return np.array([1.0 if informative[r["source"]] else uninformative for r in rows])


def finetune(config: TrainConfig, encoder: TextEncoder, train_rows: list[dict]) -> Path:
    """Train and save a PyTorch checkpoint under work_dir/checkpoint; returns its path."""
    import torch
    from transformers import TrainingArguments, set_seed

    set_seed(config.seed)
    ids, _ = encoder.encode_ids([row_input(r) for r in train_rows])
    twin_ids, _ = encoder.encode_ids(wrapped_twins(train_rows, config.seed))
    weights = class_balance_weights([r["allowed_tiers"] for r in train_rows])
    weights *= np.array([r.get("weight", 1.0) for r in train_rows])
    weights *= source_information_weights(train_rows, config.uninformative_source_weight)
    masks = [allowed_mask(r["allowed_tiers"]) for r in train_rows]
    targets = DifficultyTargets.from_rows(train_rows)
    if not config.soft_targets:
        targets = replace(targets, soft=np.full_like(targets.soft, np.nan))
    dataset = TierDataset(ids, twin_ids, masks, weights, teacher_probabilities(config, train_rows), targets)
    sampler = (
        SourceBalancedSampler(
            targets.source_ids,
            config.batch_size,
            config.sources_per_batch,
            config.seed,
            config.source_temperature,
        )
        if config.sources_per_batch
        else None
    )
    model = load_model(config.base_model, config.seed, config.layers, config.init_from)
    args = TrainingArguments(
        output_dir=str(config.work_dir / "trainer"),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,  # a float < 1 is a share of the total steps
        weight_decay=config.weight_decay,
        lr_scheduler_type="linear",
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=25,
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),  # a GPU when there is one; tests and CI run on the CPU
        dataloader_num_workers=0,
        train_sampling_strategy="group_by_length",  # batches of similar length: far less padding
        disable_tqdm=False,  # the progress bar shows the ETA
    )
    trainer = AllowedSetTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=PaddingCollator(encoder.pad_id),
        consistency_weight=config.consistency_weight,
        distill_weight=config.distill_weight,
        ranking_weight=config.ranking_weight,
        ranking_margin=config.ranking_margin,
        sampler=sampler,
    )
    trainer.train()
    checkpoint = config.work_dir / "checkpoint"
    model.eval()
    model.to("cpu")  # export and evaluation run on the CPU
    trainer.save_model(str(checkpoint))
    (config.work_dir / "train_log.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    (config.work_dir / "train_device.txt").write_text(device, encoding="utf-8")
    return checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    defaults = TrainConfig.__dataclass_fields__
    for name in (
        "name",
        "base_model",
        "epochs",
        "max_steps",
        "batch_size",
        "learning_rate",
        "seed",
        "target_under_routing",
        "target_hard_fast",
        "min_hard_rows",
        "max_train_rows",
        "consistency_weight",
        "invariance_rows",
        "max_length",
        "head_tokens",
        "tail_tokens",
        "context_tokens",
        "layers",
        "distill_weight",
        "ranking_weight",
        "ranking_margin",
        "sources_per_batch",
        "source_temperature",
        "uninformative_source_weight",
    ):
        default = defaults[name].default
        kind = type(default) if default is not None else int
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default)
    parser.add_argument(
        "--no-soft-targets",
        dest="soft_targets",
        action="store_false",
        default=None,
        help="train on the allowed-tier sets alone, not the item-response fit's soft targets",
    )
    parser.add_argument("--init-from", type=Path, default=None, help="start from this checkpoint folder")
    parser.add_argument("--teacher", type=Path, default=None, help="distil this model folder's probabilities")
    parser.add_argument("--data-dir", type=Path, default=None, help="splits from `make data`")
    parser.add_argument(
        "--out-dir", dest="output_dir", type=Path, default=None, help="model folder (default models/<name>)"
    )
    parser.add_argument(
        "--reuse-checkpoint",
        action="store_true",
        help="skip fine-tuning when runs/<name>/checkpoint exists (re-export and re-report)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(var, "1")
    kwargs = {k: v for k, v in vars(args).items() if k != "reuse_checkpoint" and v is not None}
    config = TrainConfig(**kwargs)
    try:
        run(config, reuse_checkpoint=args.reuse_checkpoint)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        log.error("%s", err)
        return 2
    return 0


def run(config: TrainConfig, reuse_checkpoint: bool = False) -> Path:
    started = time.time()
    splits = {s: read_split(config.data_dir, s) for s in ("train", "val", "test", "heldout", "non_english")}
    if config.max_train_rows:
        splits["train"] = splits["train"][: config.max_train_rows]
    encoder = TextEncoder(Tokenizer.from_file(str(tokenizer_path(config.base_model))), config.truncation)
    checkpoint = config.work_dir / "checkpoint"
    if reuse_checkpoint and checkpoint.is_dir():
        train_seconds = recorded_train_seconds(config.work_dir)
        # The manifest records how the checkpoint was trained, not this command's --epochs.
        config.epochs = recorded_epochs(config.work_dir) or config.epochs
        log.info("reusing %s (%.2f epochs in %.0f s)", checkpoint, config.epochs, train_seconds)
    else:
        checkpoint = finetune(config, encoder, splits["train"])
        train_seconds = time.time() - started
        log.info("fine-tuning took %.0f s", train_seconds)
    return finish(config, encoder, splits, checkpoint, train_seconds, started)


def _recorded(work_dir: Path, key: str) -> float:
    """The last value of `key` in the Trainer's log of a kept checkpoint (0 when the log is gone)."""
    log_file = work_dir / "train_log.json"
    if not log_file.is_file():
        return 0.0
    entries = json.loads(log_file.read_text(encoding="utf-8"))
    return float(next((e[key] for e in reversed(entries) if key in e), 0.0))


def recorded_train_seconds(work_dir: Path) -> float:
    """The Trainer's own runtime for a kept checkpoint (0 when its log is gone)."""
    return _recorded(work_dir, "train_runtime")


def recorded_epochs(work_dir: Path) -> float:
    """The epochs a kept checkpoint was trained for (0 when its log is gone)."""
    return round(_recorded(work_dir, "epoch"), 2)


def decision_offsets(
    classifier: TierClassifier,
    scaler: TemperatureScaler,
    val_rows: list[dict],
    val_probs: np.ndarray,
    seed: int,
) -> np.ndarray:
    """Tier offsets (K,) for the most likely tier, chosen for macro-F1 on `val` bare and `val` under
    the *training* wrappers (the evaluation-only wrappers stay unseen), so they suit wrapped traffic."""
    wrapped_logits, _ = classifier.logits(wrapped_twins(val_rows, seed))
    low, high = allowed_bounds(val_rows)
    probs = np.concatenate([val_probs, scaler.transform(wrapped_logits)])
    offsets = thresholds.choose_tier_offsets(probs, np.tile(low, 2), np.tile(high, 2), TIERS)
    log.info("tier offsets %s (macro-F1 on val, bare and wrapped)", offsets.round(2).tolist())
    return offsets


def finish(
    config: TrainConfig,
    encoder: TextEncoder,
    splits: dict[str, list[dict]],
    checkpoint: Path,
    train_seconds: float,
    started: float | None = None,
) -> Path:
    """Export, gate int8, calibrate, choose q, evaluate against baselines, write the model folder."""
    from transformers import AutoModelForSequenceClassification

    # eager attention: onnxruntime's BERT fusion only matches the eager graph.
    model = AutoModelForSequenceClassification.from_pretrained(
        str(checkpoint), attn_implementation="eager"
    ).eval()
    onnx_dir = config.work_dir / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)
    export = export_and_gate(config, model, encoder, splits["test"], onnx_dir)
    out = config.output_dir
    manifest = base_manifest(config, export)
    assemble_folder(out, export["chosen_path"], tokenizer_path(config.base_model), manifest)

    # Calibration, tier offsets and q use the exported graph through the serving code path.
    classifier = TierClassifier(out)
    val_logits, _ = batched_logits(classifier, splits["val"])
    scaler = TemperatureScaler().fit(val_logits, allowed_matrix(splits["val"]))
    val_probs = scaler.transform(val_logits)
    offsets = decision_offsets(classifier, scaler, splits["val"], val_probs, config.seed)
    val_low, _ = allowed_bounds(splits["val"])
    q_under = thresholds.choose_q(val_probs, val_low, config.target_under_routing, offsets)
    q_hard = thresholds.choose_q_for_hard_rows(
        val_probs,
        np.array([is_hard(r) for r in splits["val"]]),
        [source_group(r["source"]) for r in splits["val"]],
        config.target_hard_fast,
        config.min_hard_rows,
        offsets,
    )
    # One q when the under-routing target is the stricter; else a stricter q for leaving `fast` only,
    # and the cheapest q above it that keeps the under-routing target.
    q: EscalationQ = (
        q_under
        if q_hard <= q_under
        else thresholds.choose_q_above_cheapest(
            val_probs, val_low, config.target_under_routing, q_hard, offsets
        )
    )
    manifest["temperature"] = scaler.temperature_
    manifest["escalation"] = {
        "q": q,
        "target_under_routing": config.target_under_routing,
        "q_under_routing": q_under,
        "target_hard_fast": config.target_hard_fast,
        "q_hard_rows": q_hard,
        "tier_offsets": [round(float(o), 2) for o in offsets],
        "rule": "lowest tier t with P(true tier <= t) >= q (q[t] when q is one per tier boundary), "
        "never below argmax(log P + tier_offsets)",
        "chosen_on": "val (tier offsets: val bare and under training wrappers, for macro-F1; then q: the "
        "under-routing q, or, when the hard-rows q is stricter, that for leaving fast and the cheapest "
        "q above it meeting the under-routing target)",
    }
    write_manifest(out, manifest)

    policy = load_policy(paths.policy_file())
    classifier = TierClassifier(out)
    baselines = fitted_baselines(classifier, splits["train"], config.seed)
    evaluation = evaluate_all(classifier, splits, scaler, q, load_prices(policy), baselines)
    evaluation["invariance"] = evaluate_invariance(
        classifier, splits, baselines, config.invariance_rows, config.seed
    )
    # Ranking inside each source, hard rows per source group: what the promotion gate reads
    # (training/gate.py, `make gate`, which also times the model in an idle service).
    evaluation["within_source"] = within_source_report(classifier, splits, config.seed)
    # The estimator the service answers from when the encoder cannot make its deadline.
    manifest["estimator"] = build_estimator(
        out,
        splits,
        config.target_under_routing,
        config.seed,
        classifier=classifier,
        prices=load_prices(policy),
    )
    evaluation["estimator"] = manifest["estimator"]
    manifest["metrics"] = headline_metrics(evaluation, scaler)
    manifest["train_seconds"] = round(train_seconds, 1)  # fine-tuning alone
    device_file = config.work_dir / "train_device.txt"
    manifest["train_device"] = device_file.read_text(encoding="utf-8") if device_file.is_file() else "CPU"
    if started is not None:  # data loading, fine-tuning, export, gate, calibration, evaluation
        manifest["pipeline_seconds"] = round(time.time() - started, 1)
    write_manifest(out, manifest)
    write_report(out / "report", manifest, evaluation)
    write_within_source(out / "report", evaluation["within_source"])
    log.info("wrote %s (%s, %.1f MB)", out, manifest["precision"], (out / ONNX_FILE).stat().st_size / 1e6)
    return out


if __name__ == "__main__":
    sys.exit(main())
