"""`make data`: public outcome data (and your own JSONL) -> deduplicated, split, documented rows.

    python -m tierwise.training.build_dataset                       # public data from TIERWISE_DATA_DIR
    python -m tierwise.training.build_dataset --user-data mine.jsonl --no-public   # only your traffic

Writes data/processed/{train,val,test,heldout,non_english}.jsonl, dataset.json (counts, hash,
settings) and datasheet.md. Raw data is only read; everything here is rebuilt on every run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tierwise.core.request_text import ClassifierInput, request_input
from tierwise.training import paths
from tierwise.training.difficulty_targets import Difficulty, fit_difficulty
from tierwise.training.fit_sources import FIT_LABELED_ORIGINS
from tierwise.training.labels import TIER_INDEX, TIERS, lowest_tier
from tierwise.training.source_groups import GROUPS, source_group
from tierwise.training.sources import LabeledPrompt, SourceStats, read_public_sources
from tierwise.training.text_cleaning import dedup_key
from tierwise.training.user_data import MalformedRow, read_user_jsonl

log = logging.getLogger("tierwise.data")

SPLITS = ("train", "val", "test", "heldout", "non_english")
# When the same prompt comes from several collections and their labels conflict, the label from
# the earlier origin wins: your own traffic, then outcomes of today's models (zeroeval, shaberi: the
# most direct evidence about today's tiers), then older full outcome data, then bounds, then difficulty.
ORIGIN_PRIORITY = (
    "user",
    "zeroeval",
    "shaberi",
    "routerbench",
    "llmrouter",
    "oasst-qlora",
    "routellm",
    "mmlu-pro",
    "math-levels",
    "qwen-math",
)


@dataclass
class BuildConfig:
    seed: int = 13
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    # Sources never used in training or calibration: shows whether complexity or style was learned.
    # CRUXEval (code execution, outcomes of 2024 models in all three tiers) is the one whose labels
    # the text can predict: within Winogrande every method ranks at chance (AUC 0.49-0.53: a 2023
    # model majority guessing a binary choice), and commonsense_qa is all `fast` (data/README.md).
    # Held out whole as well: four MMLU-Pro categories (29 models' verdicts per question, so their
    # labels vary inside the source); Winogrande and CommonsenseQA stay reported but leave the gate.
    heldout_sources: tuple[str, ...] = (
        "winogrande",
        "commonsense_qa",
        "cruxeval",
        "mmlu_pro_engineering",
        "mmlu_pro_psychology",
        "mmlu_pro_history",
        "mmlu_pro_health",
    )
    # A row takes its tier from the item-response fit when at least this many verdicts place it
    # (ZeroEval 43-51, MMLU-Pro 26-29, RouterBench 13, LLMRouter up to 9); with fewer (RouteLLM's 2,
    # OpenAssistant's judged pairs) its source's label rule stays and the fit only ranks it.
    min_verdicts_for_fit_label: int = 8
    # Source balance: no source contributes more than this many rows to train (val/test: a quarter).
    max_rows_per_source: int = 1500
    # all-MiniLM-L6-v2 is an English encoder: other languages are measured apart, never trained on.
    train_languages: tuple[str, ...] = ("en",)

    def __post_init__(self) -> None:
        if not 0 < self.val_fraction + self.test_fraction < 1:
            raise ValueError("val_fraction + test_fraction must be between 0 and 1")
        if self.max_rows_per_source < 1:
            raise ValueError("max_rows_per_source must be at least 1")


@dataclass
class DedupStats:
    rows_in: int = 0
    unique: int = 0
    merged: int = 0  # duplicates whose labels agreed (allowed sets intersected)
    conflicts: int = 0  # duplicates whose labels disagreed (higher-priority origin kept)
    cross_origin: Counter[str] = field(default_factory=Counter)


def stable_fraction(key: str, seed: int) -> float:
    """A deterministic number in [0, 1) per text: the split does not depend on row order."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def deduplicate(rows: list[LabeledPrompt]) -> tuple[list[tuple[str, LabeledPrompt]], DedupStats]:
    """One row per normalized text, across all sources; returns (key, row) pairs."""
    stats = DedupStats(rows_in=len(rows))
    kept: dict[str, LabeledPrompt] = {}
    rank = {o: i for i, o in enumerate(ORIGIN_PRIORITY)}
    for row in sorted(rows, key=lambda r: rank.get(r.origin, len(rank))):
        key = dedup_key(row.text)
        if not key:
            continue
        first = kept.get(key)
        if first is None:
            kept[key] = row
            continue
        if first.origin != row.origin:
            stats.cross_origin[f"{first.origin}+{row.origin}"] += 1
        both = first.allowed & row.allowed
        if both:
            stats.merged += 1
            kept[key] = replace(first, allowed=both)
        else:
            stats.conflicts += 1
    stats.unique = len(kept)
    return sorted(kept.items()), stats


def assign_split(key: str, row: LabeledPrompt, config: BuildConfig) -> str:
    if row.lang not in config.train_languages:
        return "non_english"
    if row.source in config.heldout_sources:
        return "heldout"
    u = stable_fraction(key, config.seed)
    if u < config.test_fraction:
        return "test"
    return "val" if u < config.test_fraction + config.val_fraction else "train"


def balance_sources(
    rows: list[tuple[str, LabeledPrompt]], cap: int, seed: int
) -> list[tuple[str, LabeledPrompt]]:
    """At most `cap` rows per source, chosen by a seeded hash (so reruns pick the same rows)."""
    by_source: dict[str, list[tuple[str, LabeledPrompt]]] = defaultdict(list)
    for key, row in rows:
        by_source[row.source].append((key, row))
    out = []
    for items in by_source.values():
        items.sort(key=lambda kr: stable_fraction(kr[0], seed + 1))
        out.extend(items[:cap])
    return sorted(out, key=lambda kr: stable_fraction(kr[0], seed + 2))


def label_from_fit(
    deduped: list[tuple[str, LabeledPrompt]],
    difficulties: dict[str, Difficulty],
    config: BuildConfig,
    stats: SourceStats,
) -> list[tuple[str, LabeledPrompt]]:
    """Rows whose verdicts are many take the fit's tier as their label; rows of a collection that
    only the fit labels (MMLU-Pro) are dropped, and counted, when the fit has no verdict for them."""
    out = []
    for key, row in deduped:
        difficulty = difficulties.get(key)
        if difficulty is not None and (
            row.origin in FIT_LABELED_ORIGINS or difficulty.evidence >= config.min_verdicts_for_fit_label
        ):
            if difficulty.tier not in row.allowed and row.origin not in FIT_LABELED_ORIGINS:
                rule = label_text(sorted(row.allowed, key=TIER_INDEX.__getitem__))
                stats.notes[row.origin][f"the label rule said {rule}, the fit {difficulty.tier}"] += 1
            row = replace(row, allowed=frozenset({difficulty.tier}))
        elif row.origin in FIT_LABELED_ORIGINS:
            stats.drop(row.origin, "no verdict reached the item-response fit")
            continue
        out.append((key, row))
    return out


def to_record(key: str, row: LabeledPrompt, difficulty: Difficulty | None = None) -> dict:
    allowed = sorted(row.allowed, key=TIER_INDEX.__getitem__)
    return {
        "id": hashlib.sha1(key.encode()).hexdigest()[:16],
        "text": row.text,
        "allowed_tiers": allowed,
        "tier": allowed[0] if len(allowed) == 1 else None,
        "source": row.source,
        "origin": row.origin,
        "weight": row.weight,
        "lang": row.lang,
        **(difficulty.record() if difficulty is not None else {}),
        **(row.request or {}),
    }


def row_input(record: dict) -> ClassifierInput:
    """What the classifier reads of a processed row: its conversation when it came as one."""
    if record.get("messages") is not None:
        return request_input({"messages": record["messages"], "tools": record.get("tools")})
    return ClassifierInput.plain(record["text"])


def split_rows(
    deduped: list[tuple[str, LabeledPrompt]],
    config: BuildConfig,
    difficulties: dict[str, Difficulty] | None = None,
) -> dict[str, list[dict]]:
    grouped: dict[str, list[tuple[str, LabeledPrompt]]] = {s: [] for s in SPLITS}
    for key, row in deduped:
        grouped[assign_split(key, row, config)].append((key, row))
    caps = {
        "train": config.max_rows_per_source,
        "val": config.max_rows_per_source // 4,
        "test": config.max_rows_per_source // 4,
        "heldout": config.max_rows_per_source,
        "non_english": config.max_rows_per_source,
    }
    return {
        split: [
            to_record(k, r, (difficulties or {}).get(k))
            for k, r in balance_sources(items, caps[split], config.seed)
        ]
        for split, items in grouped.items()
    }


def write_jsonl(path: Path, records: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def data_hash(out_dir: Path) -> str:
    h = hashlib.sha256()
    for split in SPLITS:
        h.update((out_dir / f"{split}.jsonl").read_bytes())
    return h.hexdigest()


def label_text(allowed: list[str]) -> str:
    return allowed[0] if len(allowed) == 1 else "{" + ",".join(allowed) + "}"


def _collection_lines(stats: SourceStats) -> list[str]:
    """Rows read and dropped per collection, and the notes on rows kept."""
    lines = [
        "## Rows read and dropped per collection",
        "",
        "| collection | read | dropped | why |",
        "|---|---:|---:|---|",
    ]
    for origin, n in sorted(stats.read.items()):
        reasons = stats.dropped.get(origin, Counter())
        why = "; ".join(f"{r}: {c}" for r, c in reasons.items()) or "-"
        lines.append(f"| {origin} | {n} | {sum(reasons.values())} | {why} |")
    notes = [
        f"- {origin}: {what}: {c}"
        for origin in sorted(stats.notes)
        for what, c in stats.notes[origin].items()
    ]
    if notes:
        lines += ["", "Rows kept but worth a look:", "", *notes]
    return lines


def _dedup_lines(dedup: DedupStats, config: BuildConfig) -> list[str]:
    """What deduplication removed or merged, and how rows were split."""
    return [
        "## Deduplication (normalized text, across all sources, before splitting)",
        "",
        f"- rows labeled: {dedup.rows_in}; unique texts: {dedup.unique}; "
        f"duplicates removed: {dedup.rows_in - dedup.unique}",
        f"- duplicates with agreeing labels (allowed sets intersected): {dedup.merged}",
        f"- duplicates with conflicting labels (higher-priority collection kept): {dedup.conflicts}",
        "- duplicates across collections: "
        + (", ".join(f"{k} {v}" for k, v in dedup.cross_origin.most_common()) or "none"),
        "",
        f"Splits: train/val/test by a seeded hash of the normalized text ({1 - config.val_fraction - config.test_fraction:.0%}/"
        f"{config.val_fraction:.0%}/{config.test_fraction:.0%}); held-out sources "
        f"{', '.join(config.heldout_sources) or 'none'} are never trained or calibrated on; "
        f"languages other than {', '.join(config.train_languages)} go to `non_english`. "
        f"At most {config.max_rows_per_source} rows per source in train ({config.max_rows_per_source // 4} in val and test).",
    ]


def _split_lines(split: str, records: list[dict]) -> list[str]:
    """Rows per source and label of one split."""
    labels = sorted(
        {label_text(r["allowed_tiers"]) for r in records},
        key=lambda s: (TIER_INDEX[lowest_tier(s.strip("{}").split(","))], len(s)),
    )
    lines = [f"## `{split}`: {len(records)} rows", ""]
    if not records:
        return [*lines, "(empty)", ""]
    lines += ["| source | " + " | ".join(labels) + " | total |", "|---|" + "---:|" * (len(labels) + 1)]
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for r in records:
        table[r["source"]][label_text(r["allowed_tiers"])] += 1
    for source in sorted(table):
        row = table[source]
        lines.append(
            f"| {source} | " + " | ".join(str(row[lbl]) for lbl in labels) + f" | {sum(row.values())} |"
        )
    return [*lines, ""]


def datasheet(
    splits: dict[str, list[dict]],
    stats: SourceStats,
    dedup: DedupStats,
    malformed: list[MalformedRow],
    config: BuildConfig,
    digest: str,
) -> str:
    lines = [
        "# Datasheet: tierwise training data",
        "",
        f"Built by `make data` (training/build_dataset.py). Data hash `{digest[:16]}`. "
        f"Seed {config.seed}. Label rules, sources and licenses: data/README.md.",
        "",
        *_collection_lines(stats),
        "",
        *_dedup_lines(dedup, config),
        "",
    ]
    for split in SPLITS:
        lines += _split_lines(split, splits[split])
    if malformed:
        lines += ["## Malformed rows skipped (file:line)", ""] + [f"- {m}" for m in malformed] + [""]
    return "\n".join(lines)


def fit_verdicts(stats: SourceStats) -> tuple[dict[str, Difficulty], dict]:
    """The item-response fit over every verdict the readers noted: dedup key -> Difficulty."""
    if not stats.verdicts.items:
        return {}, {"items": 0}
    log.info("item-response fit over %d prompts with verdicts", len(stats.verdicts))
    difficulties, fit = fit_difficulty(stats.verdicts, stats.price_classes)
    summary = {
        "items": len(difficulties),
        "verdicts": int(fit.evidence.sum()),
        "models": len(fit.theta),
        "converged": fit.converged,
        "price_class_models": dict(sorted(stats.price_classes.items())),
    }
    if not fit.converged:
        log.warning("the item-response fit stopped before converging; its targets are approximate")
    return difficulties, summary


def _difficulty_lines(splits: dict[str, list[dict]], fit_summary: dict) -> str:
    """The fit's size, and per split and source group the tier mix and the rows the cheap class
    almost surely fails (P(fast fails) >= 0.8)."""
    if not fit_summary.get("items"):
        return ""
    lines = [
        "## Difficulty from the item-response fit (training/difficulty.py)",
        "",
        f"{fit_summary['items']} prompts, {fit_summary['verdicts']} verdicts of {fit_summary['models']} "
        f"models; converged: {fit_summary['converged']}. Rows with a fit carry `difficulty`, `p_fail`, "
        "`target_tier` and `soft_target`.",
        "",
        "| split | group | rows | with a fit | fast / balanced / frontier (lowest allowed) | P(fast fails) >= 0.8 |",
        "|---|---|---:|---:|---|---:|",
    ]
    for split in ("train", "test", "heldout"):
        for group in GROUPS:
            rows = [r for r in splits[split] if source_group(r["source"]) == group]
            if not rows:
                continue
            lowest = Counter(lowest_tier(r["allowed_tiers"]) for r in rows)
            mix = " / ".join(f"{lowest[t] / len(rows):.0%}" for t in TIERS)
            fitted = sum("p_fail" in r for r in rows)
            hard = sum(r.get("p_fail", {}).get("fast", 0.0) >= 0.8 for r in rows)
            lines.append(f"| {split} | {group} | {len(rows)} | {fitted} | {mix} | {hard} |")
    return "\n".join([*lines, ""]) + "\n"


def build(
    out_dir: Path,
    config: BuildConfig,
    data_dir: Path | None,
    user_files: list[Path],
    skip_malformed: bool = False,
) -> dict:
    rows: list[LabeledPrompt] = []
    stats = SourceStats()
    if data_dir is not None:
        rows.extend(read_public_sources(data_dir, stats))
    malformed: list[MalformedRow] = []
    for path in user_files:
        user_rows, errors = read_user_jsonl(path)
        stats.read["user"] += len(user_rows) + len(errors)
        rows.extend(user_rows)
        malformed.extend(errors)
    for error in malformed:
        log.error("malformed row %s", error)
    if malformed and not skip_malformed:
        raise ValueError(
            f"{len(malformed)} malformed row(s), first: {malformed[0]}. "
            "Fix them, or pass --skip-malformed to build without them (they stay listed)."
        )
    if not rows:
        raise ValueError("no labeled rows: give --user-data files or leave the public data on")
    difficulties, fit_summary = fit_verdicts(stats)
    deduped, dedup = deduplicate(rows)
    deduped = label_from_fit(deduped, difficulties, config, stats)
    splits = split_rows(deduped, config, difficulties)
    if not splits["train"] or not splits["val"]:
        raise ValueError("train or val is empty: add rows or hold out fewer sources (--heldout-sources)")
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, records in splits.items():
        write_jsonl(out_dir / f"{split}.jsonl", records)
    digest = data_hash(out_dir)
    summary = {
        "data_hash": digest,
        "config": asdict(config),
        "tiers": list(TIERS),
        "counts": {s: len(r) for s, r in splits.items()},
        "dedup": {
            "rows_in": dedup.rows_in,
            "unique": dedup.unique,
            "merged": dedup.merged,
            "conflicts": dedup.conflicts,
        },
        "malformed_rows": [str(m) for m in malformed],
        "difficulty_fit": fit_summary,
    }
    (out_dir / "dataset.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    sheet = datasheet(splits, stats, dedup, malformed, config, digest)
    (out_dir / "datasheet.md").write_text(sheet + _difficulty_lines(splits, fit_summary), encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out-dir", type=Path, default=None, help="output folder (default data/processed)")
    parser.add_argument("--data-dir", type=Path, default=None, help="public data (default TIERWISE_DATA_DIR)")
    parser.add_argument("--no-public", action="store_true", help="use only --user-data files")
    parser.add_argument("--user-data", type=Path, nargs="*", default=[], help="your labeled JSONL files")
    parser.add_argument("--skip-malformed", action="store_true", help="build even if some rows are malformed")
    parser.add_argument("--heldout-sources", nargs="*", default=None, help="sources never trained on")
    parser.add_argument("--max-rows-per-source", type=int, default=BuildConfig.max_rows_per_source)
    parser.add_argument("--seed", type=int, default=BuildConfig.seed)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    config = BuildConfig(seed=args.seed, max_rows_per_source=args.max_rows_per_source)
    if args.heldout_sources is not None:
        config.heldout_sources = tuple(args.heldout_sources)
    out = args.out_dir or paths.processed_dir()
    data_dir = None if args.no_public else (args.data_dir or paths.data_dir())
    try:
        summary = build(out, config, data_dir, args.user_data, args.skip_malformed)
    except (ValueError, FileNotFoundError) as err:
        log.error("%s", err)
        return 2
    log.info("wrote %s: %s (data hash %s)", out, summary["counts"], summary["data_hash"][:16])
    return 0


if __name__ == "__main__":
    sys.exit(main())
