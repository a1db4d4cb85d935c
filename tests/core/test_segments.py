"""Automatic request segments (serving/tierwise/core/segments.py): nearest centroid by cosine on the
estimator's hashed features, the caller's route first, and the folder file's contract."""

import zlib

import numpy as np
import pytest
from tierwise.core.estimator import hashed_features
from tierwise.core.model_folder import ModelFolderError
from tierwise.core.request_text import ClassifierInput
from tierwise.core.segments import AUTO_PREFIX, SEGMENTS_FILE, SegmentModel, segment_for

N = 2**10
MARKERS = ("theorem", "invoice", "python")  # centroid i is the unigram slot of MARKERS[i]


def slot(word: str) -> int:
    return zlib.crc32(word.encode()) % N


def marker_model() -> SegmentModel:
    """Three one-word centroids (padded to m=2 with a zero weight): the tests can predict the output."""
    slots = np.array([[slot(w), 0] for w in MARKERS])
    weights = np.array([[1.0, 0.0]] * len(MARKERS), dtype=np.float32)
    return SegmentModel(slots, weights, N, ("auto-00", "auto-01", "auto-02"))


def test_assign_picks_the_nearest_centroid_by_cosine():
    model = marker_model()
    texts = [
        "Prove this theorem",
        "Please pay the invoice today",
        "Write python code",
        "python theorem theorem",
    ]
    assert model.assign([ClassifierInput.plain(t) for t in texts]) == [
        "auto-00",
        "auto-01",
        "auto-02",
        "auto-00",
    ]


def test_scores_are_the_dot_product_of_the_sparse_vectors():
    model = marker_model()
    item = ClassifierInput.plain("an invoice for python lessons")
    features = hashed_features(item, N)
    expected = [features.get(slot(w), 0.0) for w in MARKERS]
    assert np.allclose(model.scores(item), expected)
    assert model.assign([]) == []


def test_from_centroids_keeps_the_heaviest_terms_renormalised():
    dense = np.zeros((2, N))
    dense[0, [1, 2, 3]] = [0.1, 3.0, 4.0]
    dense[1, 5] = 2.0
    model = SegmentModel.from_centroids(dense, max_terms=2)
    assert model.names == (f"{AUTO_PREFIX}00", f"{AUTO_PREFIX}01")
    assert model.slots.shape == (2, 2) and set(model.slots[0]) == {2, 3}
    assert np.allclose(np.linalg.norm(model.weights, axis=1), 1.0)
    assert np.isclose(dict(zip(model.slots[0], model.weights[0], strict=True))[3], 0.8)


def test_the_callers_route_wins_over_the_automatic_segment():
    assert segment_for("billing-app", "auto-03") == "billing-app"
    assert segment_for(None, "auto-03") == "auto-03"
    assert segment_for("", "auto-03") == "auto-03"
    assert segment_for(None, None) is None


def test_a_folder_without_segments_loads_none(tmp_path):
    assert SegmentModel.load(tmp_path) is None


def test_save_and_load_round_trip(tmp_path):
    model = marker_model()
    model.save(tmp_path / SEGMENTS_FILE)
    loaded = SegmentModel.load(tmp_path)
    assert loaded is not None
    assert loaded.names == model.names and loaded.n_features == N
    assert np.array_equal(loaded.slots, model.slots) and np.array_equal(loaded.weights, model.weights)
    items = [ClassifierInput.plain(t) for t in ("the invoice", "a theorem", "python!")]
    assert loaded.assign(items) == model.assign(items)


@pytest.mark.parametrize(
    "write",
    [
        lambda path: path.write_bytes(b"not a zip file"),
        lambda path: np.savez(path, slots=np.zeros((2, 3), dtype=np.int32)),  # no weights, names
        lambda path: np.savez(  # a slot past n_features
            path,
            slots=np.array([[N + 5]]),
            weights=np.ones((1, 1), dtype=np.float32),
            n_features=N,
            names=["a"],
        ),
        lambda path: np.savez(  # two names for one centroid
            path,
            slots=np.array([[1]]),
            weights=np.ones((1, 1), dtype=np.float32),
            n_features=N,
            names=["a", "b"],
        ),
    ],
)
def test_a_malformed_file_says_how_to_rebuild_it(tmp_path, write):
    folder = tmp_path / "candidate"
    folder.mkdir()
    write(folder / SEGMENTS_FILE)
    with pytest.raises(ModelFolderError, match=r"make segments MODEL=candidate"):
        SegmentModel.load(folder)
