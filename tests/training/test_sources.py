"""The readers on tiny fixture files written in each collection's real layout (tests/helpers/source_files.py):
each source's tier rule on the rows it was written for."""

import pytest
from tierwise.training.labels import DIFFICULTY_SOURCE_TIERS
from tierwise.training.sources import (
    LLMROUTER_TIERS,
    READERS,
    ROUTERBENCH_TIERS,
    SourceStats,
    read_llmrouter,
    read_math_levels,
    read_oasst,
    read_public_sources,
    read_qwen_math,
    read_routellm,
    read_routerbench,
)

from tests.helpers.source_files import (
    BALANCED_2023,
    CHATQA,
    FAST_2023,
    GPT4,
    MIXTRAL,
    NEMOTRONS,
    SMALL_2024,
    labels,
    llmrouter_dir,
    oasst_verdicts,
    routerbench_dir,
    routerbench_row,
    write_csv,
    write_jsonl,
)


def test_routerbench_2023_balanced_models_stand_for_todays_fast(tmp_path):
    small = {"mistralai/mistral-7b-chat", "WizardLM/WizardLM-13B-V1.2"}
    arc = [
        routerbench_row("four of six", "arc-challenge", set(FAST_2023[:4])),
        routerbench_row("three of six", "arc-challenge", set(FAST_2023[:3]) | set(BALANCED_2023[:2])),
        # mistral-7b and WizardLM-13B are below today's fast class: their passes count for nothing
        routerbench_row("only small", "arc-challenge", small | set(FAST_2023[:3])),
        routerbench_row("one gpt-4", "arc-challenge", {"gpt-4-1106-preview"}),
    ]
    mbpp = [
        routerbench_row("llama-2-70b writes it", "mbpp", {"meta/llama-2-70b-chat"}),
        routerbench_row("gpt-4 writes it", "mbpp", {"gpt-4-1106-preview"}),
        routerbench_row("mistral-7b writes it", "mbpp", {"mistralai/mistral-7b-chat"}),
    ]
    stats = SourceStats()
    rows = list(read_routerbench(routerbench_dir(tmp_path, arc, mbpp), stats))
    assert labels(rows) == {
        "four of six": {"fast"},  # multiple choice: strict majority of the six
        "three of six": {"balanced"},
        "llama-2-70b writes it": {"fast"},  # open-ended: the best model is enough
        "gpt-4 writes it": {"balanced"},
    }
    assert not any("frontier" in r.allowed for r in rows)  # no frontier model was run
    assert stats.dropped["routerbench"] == {"no tier passes (no frontier model was run)": 3}
    assert set(ROUTERBENCH_TIERS) == {"fast", "balanced"} and not small & set(FAST_2023)


# --- LLMRouter --------------------------------------------------------------------------------
def test_llmrouter_fast_tier_includes_the_nemotrons_in_the_majority(tmp_path):
    rows = [
        ("nemotrons and two small", "openbook_qa", "em_mc", {*NEMOTRONS, *SMALL_2024[:2]}),
        ("nemotrons and one small", "openbook_qa", "em_mc", {*NEMOTRONS, SMALL_2024[0]}),
        ("chatqa does not vote", "openbook_qa", "em_mc", {*CHATQA, *SMALL_2024[:3]}),
        ("one nemotron solves it", "gsm8k", "GSM8K", {NEMOTRONS[0]}),
        ("nobody solves it", "gsm8k", "GSM8K", set()),
        ("exact match miss", "trivia_qa", "f1_score", set()),
    ]
    stats = SourceStats()
    out = list(read_llmrouter(llmrouter_dir(tmp_path, rows), stats))
    assert labels(out) == {
        "nemotrons and two small": {"fast"},  # 4 of 7
        "one nemotron solves it": {"fast"},
    }
    assert set(LLMROUTER_TIERS) == {"fast"} and set(NEMOTRONS) <= set(LLMROUTER_TIERS["fast"])
    assert stats.dropped["llmrouter"] == {
        "no tier passes (no stronger model was run)": 3,
        "exact-match QA failure (not trusted)": 1,
    }


# --- RouteLLM ---------------------------------------------------------------------------------
def test_routellm_mixtral_means_fast_and_only_gpt4_means_fast_or_balanced(tmp_path):
    header = ["prompt", MIXTRAL, GPT4]
    write_csv(
        tmp_path / "routellm" / "mmlu" / "mmlu_anatomy.csv",
        header,
        [
            {"prompt": "mixtral right\nA. a\nB. b", MIXTRAL: "True", GPT4: "False"},
            {"prompt": "gpt-4 right\nA. a\nB. b", MIXTRAL: "False", GPT4: "True"},
            {"prompt": "both wrong\nA. a\nB. b", MIXTRAL: "False", GPT4: "False"},
        ],
    )
    write_csv(
        tmp_path / "routellm" / "gsm8k" / "gsm8k_responses.csv",
        [*header, f"{MIXTRAL}_response", f"{GPT4}_response"],
        [
            {
                "prompt": "2 + 2?",
                MIXTRAL: "True",
                GPT4: "True",
                f"{MIXTRAL}_response": "4",
                f"{GPT4}_response": "4",
            }
        ],
    )
    stats = SourceStats()
    rows = list(read_routellm(tmp_path, stats))
    assert labels(rows) == {
        "mixtral right\nA) a\nB) b": {"fast"},
        "gpt-4 right\nA) a\nB) b": {"fast", "balanced"},
        "2 + 2?": {"fast"},
    }
    assert [r.source for r in rows] == ["mmlu", "mmlu", "gsm8k"]
    assert stats.dropped["routellm"] == {"no tier passes": 1}


# --- OpenAssistant (qlora) --------------------------------------------------------------------
def test_oasst_fast_when_small_hold_up_to_gpt35_or_mid_to_gpt4(tmp_path):
    write_jsonl(
        tmp_path / "oasst-qlora" / "oa_questions.jsonl",
        [
            {"input": f"### Human: question {m}### Assistant:", "message_id": m, "lang": lang}
            for m, lang in (("small-ok", "en"), ("mid-ok", "en"), ("neither", "es"), ("unjudged", "en"))
        ],
    )
    # 7b vs gpt-3.5 (both orders): small-ok tie + win; mid-ok and neither lose both
    oasst_verdicts(tmp_path, "7b", "gpt-3.5", {"small-ok": 3, "mid-ok": 2, "neither": 2, "unjudged": -1})
    oasst_verdicts(tmp_path, "gpt-3.5", "7b", {"small-ok": 2, "mid-ok": 1, "neither": 1})
    # 30b vs gpt-4 (both orders): mid-ok holds up once of two (half is enough); neither never
    oasst_verdicts(tmp_path, "30b", "gpt-4", {"small-ok": 2, "mid-ok": 1, "neither": 2})
    oasst_verdicts(tmp_path, "gpt-4", "30b", {"small-ok": 1, "mid-ok": 1, "neither": 1})
    stats = SourceStats()
    rows = {r.text: r for r in read_oasst(tmp_path, stats)}
    assert {t: set(r.allowed) for t, r in rows.items()} == {
        "question small-ok": {"fast"},
        "question mid-ok": {"fast"},
        "question neither": {"balanced"},  # GPT-4 (2023) level is enough: never frontier
    }
    assert rows["question neither"].lang == "es"
    assert stats.dropped["oasst-qlora"] == {"no verdicts": 1}


# --- Difficulty-only sources ------------------------------------------------------------------
def test_math_levels_map_to_todays_tiers_and_level_5_is_left_to_outcomes(tmp_path):
    write_jsonl(
        tmp_path / "math-levels" / "math_test.jsonl",
        [{"problem": f"problem at level {n}", "level": f"Level {n}", "type": "Algebra"} for n in range(1, 6)]
        + [{"problem": "no level", "level": "Level ?", "type": "Algebra"}],
    )
    stats = SourceStats()
    rows = list(read_math_levels(tmp_path, stats))
    assert labels(rows) == {
        "problem at level 1": {"fast"},
        "problem at level 2": {"fast"},
        "problem at level 3": {"fast"},
        "problem at level 4": {"fast", "balanced"},
    }
    reasons = stats.dropped["math-levels"]
    assert reasons["level not 1-5"] == 1 and sum(reasons.values()) == 2
    assert any(r.startswith("level 5") for r in reasons)


QWEN_ROWS = {
    "svamp": {"Body": "There are 3 apples.", "Question": "How many apples?"},
    "mawps": {"input": "Joan had 2 shells. How many?"},
    "asdiv": {"body": "Two cats sit.", "question": "How many cats?"},
    "gsm8k": {"question": "Janet has 3 ducks. How many legs?"},
    "aqua": {"question": "What is 1+1?", "options": ["A)1", "B)2", "C)3", "D)4", "E)5"]},
    "sat_math": {"question": "Which is true?", "options": "A) $x=1$ B) $x=2$ C. $x=3$ D) 4"},
    "college_math": {"question": "Simplify: $-10-4(n-5)$"},
    "minerva_math": {"problem": "Find the focal length."},
    "olympiadbench": {"question": "Prove the game ends."},
    "aime24": {"problem": "Find the remainder mod 1000."},
    "amc23": {"problem": "How many miles from City A?"},
}


def test_qwen_math_sources_map_to_todays_tiers(tmp_path):
    for name, row in QWEN_ROWS.items():
        write_jsonl(tmp_path / "qwen-math" / f"{name}.jsonl", [row])
    rows = {r.source: r for r in read_qwen_math(tmp_path, SourceStats())}
    assert set(rows) == set(DIFFICULTY_SOURCE_TIERS) == set(QWEN_ROWS)
    assert {s: set(r.allowed) for s, r in rows.items()} == {
        **{s: {"fast"} for s in ("svamp", "mawps", "asdiv", "gsm8k", "aqua", "sat_math")},
        "college_math": {"fast", "balanced"},
        "minerva_math": {"fast", "balanced"},
        **{s: {"frontier"} for s in ("olympiadbench", "aime24", "amc23")},
    }
    assert rows["sat_math"].text == "Which is true?\nA) $x=1$\nB) $x=2$\nC) $x=3$\nD) 4"
    assert rows["aqua"].text.endswith("\nA) 1\nB) 2\nC) 3\nD) 4\nE) 5")


# --- All collections --------------------------------------------------------------------------
def test_missing_collections_are_named_in_the_error(tmp_path):
    (tmp_path / "routerbench").mkdir()
    with pytest.raises(FileNotFoundError, match="TIERWISE_DATA_DIR") as err:
        list(read_public_sources(tmp_path, SourceStats()))
    assert "'zeroeval'" in str(err.value) and "'shaberi'" in str(err.value)
    assert "'routerbench'" not in str(err.value)
    assert list(READERS)[:2] == ["zeroeval", "shaberi"]
