"""Edge cases of the label rules in `tierwise.training.sources`: rows no rule can label, blank cells,
per-task exclusions, unknown systems, and every collection read in order."""

import gzip
import json

import pytest
from tierwise.training.labels import DIFFICULTY_SOURCE_TIERS
from tierwise.training.sources import (
    READERS,
    SourceStats,
    read_llmrouter,
    read_math_levels,
    read_oasst,
    read_public_sources,
    read_routerbench,
    read_shaberi,
)

from tests.helpers.source_files import (
    FAST_2023,
    GPT4,
    MIXTRAL,
    NEMOTRONS,
    ROUTERBENCH_MODELS,
    SMALL_2024,
    labels,
    llmrouter_dir,
    oasst_verdicts,
    routerbench_dir,
    routerbench_row,
    shaberi_dir,
    write_csv,
    write_jsonl,
    zeroeval_dir,
)


def test_shaberi_rows_without_a_voting_model_are_dropped_and_the_threshold_is_inclusive(tmp_path):
    elyza = [
        {"prompt": "採点なし", "scores": {"unknown-model": 5}},  # no model of models.json scored it
        # exactly 4 of 5 is a pass (>= 80% of the scale): both fast models pass
        {"prompt": "ちょうど", "scores": {"f1": 4, "f2": 4, "b1": 4, "b2": 4, "x1": 4, "x2": 4}},
    ]
    stats = SourceStats()
    rows = list(read_shaberi(shaberi_dir(tmp_path, elyza, rakuda=[]), stats))
    assert labels(rows) == {"ちょうど": {"fast"}}
    assert stats.dropped["shaberi"] == {"no scores": 1} and stats.read["shaberi"] == 2
    assert not stats.notes["shaberi"]  # the frontier tier passes too: no inversion


def test_routerbench_blank_cells_are_models_not_run_and_every_file_and_split_is_read(tmp_path):
    only_balanced_run = routerbench_row("fast models not run", "arc-challenge", {"claude-v2", "claude-v1"})
    only_balanced_run |= dict.fromkeys(FAST_2023, "")
    nothing_run = routerbench_row("nothing run", "arc-challenge", set())
    nothing_run |= dict.fromkeys(ROUTERBENCH_MODELS, "")
    root = routerbench_dir(tmp_path, arc=[only_balanced_run, nothing_run], mbpp=[])
    header = ["", "sample_id", "prompt", "eval_name", *ROUTERBENCH_MODELS, "oracle_model_to_route_to"]
    write_csv(
        root / "routerbench" / "winograde_test.csv",
        header,
        [routerbench_row("a test-split winogrande row", "winogrande", set(FAST_2023))],
    )
    stats = SourceStats()
    rows = {r.text: r for r in read_routerbench(root, stats)}
    # Only the balanced tier was run and passes: the fast tier may pass too, so the label is a bound.
    assert set(rows["fast models not run"].allowed) == {"fast", "balanced"}
    assert rows["a test-split winogrande row"].source == "winogrande"  # the file is misspelt, not the source
    assert set(rows["a test-split winogrande row"].allowed) == {"fast"}
    assert stats.dropped["routerbench"] == {"no outcomes": 1} and stats.read["routerbench"] == 3


def test_llmrouter_per_task_exclusions_choices_and_unknown_questions(tmp_path):
    qwen, gemma = "qwen2.5-7b-instruct", "gemma-2-9b-it"
    rows = [
        # 4 of 7 voters would be a majority, but qwen does not vote on MMLU: 3 of 6 is not
        ("mmlu with qwen", "mmlu", "em_mc", {qwen, *SMALL_2024[1:3], NEMOTRONS[0]}),
        ("mmlu without qwen", "mmlu", "em_mc", {*SMALL_2024[1:4], NEMOTRONS[0]}),
        # open-ended: the best model is enough, but gemma's human_eval scores are parsing failures
        ("only gemma writes it", "human_eval", "pass@1", {gemma}),
        ("gemma writes a gsm8k answer", "gsm8k", "GSM8K", {gemma}),
    ]
    root = llmrouter_dir(tmp_path, rows)
    write_jsonl(
        root / "llmrouter" / "default_query_test.jsonl",
        [{"task_name": "arc", "query": "Which colour?", "metric": "em_mc", "choices": ["red", "blue"]}],
    )
    test_scores = [
        {"question": "Which colour?", "scores": dict.fromkeys(SMALL_2024 + NEMOTRONS, 1.0)},
        {"question": "a question no task names", "scores": dict.fromkeys(SMALL_2024, 1.0)},
    ]
    (root / "llmrouter" / "test.json").write_text(json.dumps(test_scores))
    stats = SourceStats()
    out = {r.text: r for r in read_llmrouter(root, stats)}
    assert labels(out.values()) == {
        "mmlu without qwen": {"fast"},
        "gemma writes a gsm8k answer": {"fast"},
        "Which colour?\nA) red\nB) blue": {"fast"},
    }
    assert out["mmlu without qwen"].source == "mmlu" and out["Which colour?\nA) red\nB) blue"].source == "arc"
    assert stats.read["llmrouter"] == 6
    assert stats.dropped["llmrouter"] == {
        "no tier passes (no stronger model was run)": 2,
        "no task name (question not in default_query_*.jsonl)": 1,
    }


def test_oasst_counts_13b_systems_as_small_and_refuses_an_unknown_system(tmp_path):
    write_jsonl(
        tmp_path / "oasst-qlora" / "oa_questions.jsonl",
        [{"input": "### Human: hello### Assistant:", "message_id": "m1"}],
    )
    ratings = tmp_path / "oasst-qlora" / "ratings-gpt4"
    name = "13b-guanaco-x-vs-gpt-3.5-oa-generations-gpt-4-reviewer-threeclass.jsonl"
    write_jsonl(ratings / name, [{"message_id": "m1", "score": 1}])
    [row] = read_oasst(tmp_path, SourceStats())
    assert set(row.allowed) == {"fast"} and row.lang == "en" and row.source == "oasst"
    write_jsonl(ratings / "llama-2-vs-gpt-4-oa-generations-gpt-4-reviewer-threeclass.jsonl", [])
    with pytest.raises(ValueError, match="llama-2"):
        list(read_oasst(tmp_path, SourceStats()))


def test_math_levels_read_a_bare_number_and_drop_a_missing_level(tmp_path):
    write_jsonl(
        tmp_path / "math-levels" / "math_test.jsonl",
        [
            {"problem": "numeric level", "level": 2},
            {"problem": "level 9", "level": "Level 9"},
            {"problem": "x"},
        ],
    )
    stats = SourceStats()
    assert labels(read_math_levels(tmp_path, stats)) == {"numeric level": {"fast"}}
    assert stats.dropped["math-levels"] == {"level not 1-5": 2}


def test_every_collection_is_read_in_the_readers_order(tmp_path):
    passes = {"fast-a": True, "fast-b": True}
    zeroeval_dir(tmp_path, gsm=[{"prompt": "zeroeval row", "correct": passes}])
    shaberi_dir(tmp_path, [{"prompt": "shaberi row", "scores": {"f1": 5, "f2": 5}}], rakuda=[])
    routerbench_dir(tmp_path, [routerbench_row("routerbench row", "arc-challenge", set(FAST_2023))], [])
    llmrouter_dir(tmp_path, [("llmrouter row", "gsm8k", "GSM8K", {SMALL_2024[0]})])
    routellm_row = {"prompt": "routellm row", MIXTRAL: "True", GPT4: "True"}
    write_csv(tmp_path / "routellm" / "gsm8k" / "gsm8k_responses.csv", [*routellm_row], [routellm_row])
    (tmp_path / "routellm" / "mmlu").mkdir()
    write_jsonl(
        tmp_path / "oasst-qlora" / "oa_questions.jsonl",
        [{"input": "### Human: oasst row### Assistant:", "message_id": "m"}],
    )
    oasst_verdicts(tmp_path, "7b", "gpt-3.5", {"m": 3})
    mmlu_pro = {"question": "mmlu-pro row", "options": ["a", "b"], "category": "law", "correct": {"m1": True}}
    (tmp_path / "mmlu-pro").mkdir()
    with gzip.open(tmp_path / "mmlu-pro" / "outcomes.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps(mmlu_pro) + "\n")
    write_jsonl(tmp_path / "math-levels" / "math_test.jsonl", [{"problem": "math row", "level": "Level 1"}])
    for name in DIFFICULTY_SOURCE_TIERS:
        write_jsonl(tmp_path / "qwen-math" / f"{name}.jsonl", [])
    stats = SourceStats()
    origins = [r.origin for r in read_public_sources(tmp_path, stats)]
    assert origins == list(READERS)[:-1]  # one row from each, qwen-math's files are empty
    assert set(stats.read) == set(READERS) - {"qwen-math"}
