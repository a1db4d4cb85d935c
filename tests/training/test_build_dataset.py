import json
from pathlib import Path

import pytest
from tierwise.training.build_dataset import (
    ORIGIN_PRIORITY,
    SPLITS,
    BuildConfig,
    assign_split,
    build,
    datasheet,
    deduplicate,
    label_from_fit,
    main,
    to_record,
)
from tierwise.training.difficulty_targets import Difficulty, soft_target
from tierwise.training.labels import TIERS
from tierwise.training.sources import LabeledPrompt, SourceStats
from tierwise.training.text_cleaning import dedup_key


def read(out: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]


def run_build(tmp_path: Path, files: list[Path], **kwargs) -> tuple[Path, dict]:
    out = tmp_path / "processed"
    config = BuildConfig(heldout_sources=("trivia",), val_fraction=0.2, test_fraction=0.2)
    return out, build(out, config, None, files, **kwargs)


def test_splits_are_disjoint_and_heldout_source_never_trained(tmp_path, fixture_jsonl):
    out, summary = run_build(tmp_path, [fixture_jsonl])
    keys = {s: {dedup_key(r["text"]) for r in read(out, s)} for s in SPLITS}
    assert not keys["train"] & keys["test"]
    assert not keys["train"] & keys["val"]
    assert not keys["val"] & keys["test"]
    for split in ("train", "val", "test"):
        assert all(r["source"] != "trivia" for r in read(out, split))
    assert read(out, "heldout") and all(r["source"] == "trivia" for r in read(out, "heldout"))
    assert sum(summary["counts"].values()) == summary["dedup"]["unique"]
    sheet = (out / "datasheet.md").read_text()
    assert "## `train`" in sheet and "Deduplication" in sheet


def test_build_is_deterministic(tmp_path, fixture_jsonl):
    out_a, a = run_build(tmp_path / "a", [fixture_jsonl])
    out_b, b = run_build(tmp_path / "b", [fixture_jsonl])
    assert a["data_hash"] == b["data_hash"]
    assert read(out_a, "train") == read(out_b, "train")


def test_duplicates_across_files_are_merged_before_splitting(tmp_path, fixture_jsonl):
    dupe = tmp_path / "dupe.jsonl"
    dupe.write_text(
        json.dumps({"text": "WHAT is the capital of norway support", "allowed_tiers": ["fast", "balanced"]})
        + "\n"
    )
    out, summary = run_build(tmp_path, [fixture_jsonl, dupe])
    assert summary["dedup"]["rows_in"] - summary["dedup"]["unique"] == 1
    rows = [
        r
        for s in SPLITS
        for r in read(out, s)
        if dedup_key(r["text"]) == dedup_key("what is the capital of norway support")
    ]
    assert len(rows) == 1 and rows[0]["allowed_tiers"] == ["fast"]  # labels intersected


def test_malformed_rows_are_reported_with_file_and_line(tmp_path, fixture_jsonl):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"text": "ok", "tier": "fast"}\nnot json\n{"text": "x", "tier": "cheap"}\n{"tier": "fast"}\n'
        '{"text": "y", "allowed_tiers": ["fast", "frontier"]}\n'
    )
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        run_build(tmp_path, [fixture_jsonl, bad])
    out, summary = run_build(tmp_path, [fixture_jsonl, bad], skip_malformed=True)
    reported = summary["malformed_rows"]
    assert [m.split(":")[1] for m in reported] == ["2", "3", "4", "5"]
    assert "unknown tier" in reported[1] and "contiguous" in reported[3]
    assert "bad.jsonl:4" in (out / "datasheet.md").read_text()


def test_cli_exits_nonzero_with_a_message_for_missing_public_data(tmp_path, caplog):
    assert main(["--data-dir", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path / "o")]) == 2
    assert "TIERWISE_DATA_DIR" in caplog.text


def test_zeroeval_outranks_older_sources_right_after_the_users_own_data():
    assert ORIGIN_PRIORITY[:2] == ("user", "zeroeval")
    text = "Janet has 3 ducks. How many legs?"
    rows = [
        LabeledPrompt(text, frozenset({"fast", "balanced"}), "gsm8k", "routellm"),
        LabeledPrompt(text.upper(), frozenset({"frontier"}), "zeroeval_gsm8k", "zeroeval"),
        LabeledPrompt(text, frozenset({"fast"}), "gsm8k", "qwen-math"),
    ]
    kept, stats = deduplicate(rows)
    assert len(kept) == 1 and kept[0][1].origin == "zeroeval" and kept[0][1].allowed == {"frontier"}
    assert stats.conflicts == 2


def test_japanese_rows_go_to_non_english_and_notes_reach_the_datasheet():
    config = BuildConfig()
    row = LabeledPrompt("日本の首都は？", frozenset({"fast"}), "shaberi_elyza", "shaberi", lang="ja")
    assert assign_split(dedup_key(row.text), row, config) == "non_english"
    stats = SourceStats()
    stats.read["shaberi"] += 1
    stats.note("shaberi", "inversions kept as fast")
    kept, dedup = deduplicate([row])
    record = {"allowed_tiers": ["fast"], "source": "shaberi_elyza"}
    splits = {s: [] for s in SPLITS} | {"non_english": [record]}
    sheet = datasheet(splits, stats, dedup, [], config, "0" * 64)
    assert "shaberi: inversions kept as fast: 1" in sheet


def _difficulty(tier: str, evidence: int, p_fast: float) -> Difficulty:
    p_fail = {"fast": p_fast, "balanced": p_fast / 2, "frontier": p_fast / 4}
    return Difficulty(0.5, 0.2, evidence, p_fail, tier, soft_target(p_fail))


def test_rows_with_many_verdicts_take_the_fits_tier_and_few_keep_their_rule():
    rows = [
        LabeledPrompt("many verdicts", frozenset({"fast"}), "zeroeval_math_l5", "zeroeval"),
        LabeledPrompt("two verdicts", frozenset({"fast"}), "gsm8k", "routellm"),
        LabeledPrompt("fit only", frozenset(TIERS), "mmlu_pro_law", "mmlu-pro"),
        LabeledPrompt("fit only, no verdict", frozenset(TIERS), "mmlu_pro_law", "mmlu-pro"),
        LabeledPrompt("no verdicts at all", frozenset({"balanced"}), "oasst", "oasst-qlora"),
    ]
    difficulties = {
        dedup_key("many verdicts"): _difficulty("frontier", 43, 0.9),
        dedup_key("two verdicts"): _difficulty("balanced", 2, 0.6),
        dedup_key("fit only"): _difficulty("balanced", 29, 0.7),
    }
    stats = SourceStats()
    deduped = [(dedup_key(r.text), r) for r in rows]
    labeled = dict(label_from_fit(deduped, difficulties, BuildConfig(), stats))
    assert labeled[dedup_key("many verdicts")].allowed == {"frontier"}
    assert labeled[dedup_key("two verdicts")].allowed == {"fast"}  # 2 < min_verdicts_for_fit_label
    assert labeled[dedup_key("fit only")].allowed == {"balanced"}
    assert dedup_key("fit only, no verdict") not in labeled  # dropped, and counted
    assert stats.dropped["mmlu-pro"] == {"no verdict reached the item-response fit": 1}
    assert labeled[dedup_key("no verdicts at all")].allowed == {"balanced"}
    assert stats.notes["zeroeval"] == {"the label rule said fast, the fit frontier": 1}
    # every row with a fit carries what the loss and the gate read, rows without one nothing
    record = to_record(
        dedup_key("two verdicts"), labeled[dedup_key("two verdicts")], difficulties[dedup_key("two verdicts")]
    )
    assert record["allowed_tiers"] == ["fast"] and record["target_tier"] == "balanced"
    assert record["p_fail"]["fast"] == 0.6 and record["soft_target"] == [0.4, 0.3, 0.3]
    assert "p_fail" not in to_record("k", labeled[dedup_key("no verdicts at all")])
