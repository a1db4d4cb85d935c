"""Fitting the automatic segments (training/segments.py) on a tiny synthetic corpus: two clearly
different text styles land in different clusters, and the folder gets its file and manifest entry."""

import json

from tierwise.core.request_text import ClassifierInput
from tierwise.core.segments import SEGMENTS_FILE, SegmentModel
from tierwise.training.segments import add_to_folder, fit_segments

N = 2**12
NAMES = ["ada", "bo", "cy", "dee", "eve", "fay", "gus", "hal", "ivy", "jo"]


def math_text(i: int) -> str:
    return f"{NAMES[i % 10]} has {i + 3} apples and buys {2 * i + 1} more. How many apples does {NAMES[i % 10]} have now?"


def code_text(i: int) -> str:
    return f"def f_{i}(xs):\n    return [x * {i} for x in xs if x > {i % 7}]\n\nWhat does this Python function return?"


def rows(split: str, count: int) -> list[dict]:
    out = []
    for i in range(count):
        out.append({"text": math_text(i), "source": f"{split}_math" if split == "heldout" else "math"})
        out.append({"text": code_text(i), "source": f"{split}_code" if split == "heldout" else "code"})
    return out


def test_two_styles_land_in_different_clusters():
    inputs = [ClassifierInput.plain(r["text"]) for r in rows("train", 20)]
    model = fit_segments(inputs, k=2, seed=0, n_features=N, max_terms=200)
    math = model.assign([ClassifierInput.plain(math_text(i)) for i in range(100, 110)])
    code = model.assign([ClassifierInput.plain(code_text(i)) for i in range(100, 110)])
    assert len(set(math)) == 1 and len(set(code)) == 1 and math[0] != code[0]
    assert model.slots.shape == (2, 200)


def test_add_to_folder_writes_the_file_and_only_the_segments_key(tmp_path):
    data, folder = tmp_path / "processed", tmp_path / "candidate"
    data.mkdir()
    folder.mkdir()
    for split, count in (("train", 15), ("val", 5), ("test", 5), ("heldout", 5)):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(split, count)))
    user = tmp_path / "mine.jsonl"
    user_rows = [{"text": "hello there, how are you?"}, {"messages": [{"role": "user", "content": "hi!"}]}]
    user.write_text("".join(json.dumps(r) + "\n" for r in user_rows))
    manifest = {"name": "candidate", "tiers": ["fast", "balanced", "frontier"]}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

    section = add_to_folder(folder, data, [user], k=2, seed=0, n_features=N, max_terms=100)

    written = json.loads((folder / "manifest.json").read_text())
    assert {k: v for k, v in written.items() if k != "segments"} == manifest
    assert written["segments"] == section
    assert section["fitted_rows"] == 42 and section["k"] == 2 and section["max_terms"] == 100
    recovery = section["source_recovery"]
    assert recovery["rows"] == 20 and recovery["clusters_used"] == 2 and 0.0 < recovery["ami"] <= 1.0
    assert set(recovery["heldout_top_cluster_share"]) == {"heldout_math", "heldout_code"}
    assert all(s["share"] == 1.0 for s in recovery["heldout_top_cluster_share"].values())
    loaded = SegmentModel.load(folder)
    assert loaded is not None and loaded.k == 2 and (folder / SEGMENTS_FILE).is_file()
