"""The ZeroEval and shaberi readers (tierwise.training.price_class_sources) on tiny fixture files
written in each collection's real layout (tests/helpers/source_files.py)."""

from tierwise.training.price_class_sources import CRUXEVAL_PREAMBLE, read_shaberi, read_zeroeval
from tierwise.training.source_rows import SourceStats

from tests.helpers.source_files import (
    labels,
    shaberi_dir,
    zeroeval_dir,
)


def test_zeroeval_tier_passes_when_half_of_its_core_models_pass(tmp_path):
    t, f = True, False
    gsm = [
        # one of two core fast models is half: fast passes
        {"prompt": "half of fast", "correct": {"fast-a": t, "fast-b": f, "bal-a": t, "front-a": t}},
        # non-core and `other` models passing do not make fast pass; balanced does with 2 of 2
        {
            "prompt": "only non-core fast",
            "correct": {"fast-a": f, "fast-b": f, "fast-old": t, "odd": t, "bal-a": t, "bal-b": t},
        },
        # only the core models with a verdict on the row count: fast-b has none here
        {"prompt": "missing verdict", "correct": {"fast-a": t, "bal-a": f, "front-a": f}},
        {"prompt": "frontier only", "correct": {"fast-a": f, "fast-b": f, "bal-a": f, "front-b": t}},
        {"prompt": "nobody", "correct": {"fast-a": f, "fast-b": f, "bal-a": f, "bal-b": f, "front-a": f}},
        {"prompt": "no core model", "correct": {"fast-old": t, "odd": t}},
    ]
    stats = SourceStats()
    rows = list(read_zeroeval(zeroeval_dir(tmp_path, gsm), stats))
    assert labels(rows) == {
        "half of fast": {"fast"},
        "only non-core fast": {"balanced"},
        "missing verdict": {"fast"},
        "frontier only": {"frontier"},
    }
    assert {r.source for r in rows} == {"zeroeval_gsm8k"} and {r.origin for r in rows} == {"zeroeval"}
    assert stats.read["zeroeval"] == 6
    assert stats.dropped["zeroeval"] == {
        "no tier passes (zeroeval_gsm8k)": 1,
        "no core model verdicts (zeroeval_gsm8k)": 1,
    }


def test_zeroeval_sources_and_cruxeval_preamble_stripped(tmp_path):
    code = "[PYTHON]\ndef f(x):\n    return x + 1\nassert f(1) == ??\n[/PYTHON]"
    passes = {"fast-a": True, "fast-b": True}
    root = zeroeval_dir(
        tmp_path,
        gsm=[],
        math=[{"prompt": "Find $x$ if $x^2 = 4$ and $x > 0$.", "correct": passes}],
        crux=[{"prompt": f"{CRUXEVAL_PREAMBLE} \n\n{code}", "correct": passes}],
    )
    rows = {r.source: r for r in read_zeroeval(root, SourceStats())}
    assert set(rows) == {"zeroeval_math_l5", "cruxeval"}
    assert rows["cruxeval"].text == code  # the [PYTHON] block is kept, the opening sentence is not
    assert "You are given" not in rows["cruxeval"].text


# --- shaberi ----------------------------------------------------------------------------------
def test_shaberi_thresholds_half_rule_language_and_inversions(tmp_path):
    elyza = [
        # 4 of 5 passes, 3 does not: one of two fast models passing is half
        {"prompt": "日本の首都は？", "scores": {"f1": 4, "f2": 3, "b1": 5, "b2": 5, "x1": 5, "x2": 5}},
        {"prompt": "俳句を作って", "scores": {"f1": 3, "f2": 3, "b1": 4, "b2": 2, "x1": 5, "x2": 5}},
        {"prompt": "証明して", "scores": {"f1": 1, "f2": 2, "b1": 3, "b2": 3, "x1": 3, "x2": 2}},
        # inversion: fast passes, frontier fails (kept as fast, counted)
        {"prompt": "逆転", "scores": {"f1": 5, "f2": 5, "b1": 3, "b2": 3, "x1": 3, "x2": 2}},
    ]
    rakuda = [
        # 8 of 10 passes, 7 does not; a model without a score (failed call) is not counted
        {"prompt": "四国の県は？", "scores": {"f1": 8, "b1": 9, "x1": 10, "x2": 10}},
        {"prompt": "歴史を説明して", "scores": {"f1": 7, "f2": 7, "b1": 8, "b2": 7, "x1": 9, "x2": 9}},
    ]
    stats = SourceStats()
    rows = list(read_shaberi(shaberi_dir(tmp_path, elyza, rakuda), stats))
    assert labels(rows) == {
        "日本の首都は？": {"fast"},
        "俳句を作って": {"balanced"},
        "逆転": {"fast"},
        "四国の県は？": {"fast"},
        "歴史を説明して": {"balanced"},
    }
    assert {r.lang for r in rows} == {"ja"} and {r.origin for r in rows} == {"shaberi"}
    assert {r.source for r in rows} == {"shaberi_elyza", "shaberi_rakuda"}
    assert stats.read["shaberi"] == 6 and stats.dropped["shaberi"] == {"no tier passes": 1}
    assert sum(stats.notes["shaberi"].values()) == 1


# --- RouterBench ------------------------------------------------------------------------------
