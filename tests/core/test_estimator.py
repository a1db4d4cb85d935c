"""The cheap estimator the router answers from under load (serving/tierwise/core/estimator.py)."""

import json
import zlib

import numpy as np
import pytest
from tierwise.core.estimator import (
    ESTIMATOR_FILE,
    Estimator,
    EstimatorSettings,
    estimator_for,
    hashed_features,
    length_bucket,
    task_tokens,
)
from tierwise.core.model_folder import ModelFolderError
from tierwise.core.request_text import ClassifierInput, request_input
from tierwise.service.settings import Settings

N = 2**10
WORD_TIERS = {"hello": 0, "email": 1, "theorem": 2}


def word_estimator(n_features: int = N, temperature: float = 1.0, q: float = 0.7) -> Estimator:
    """Weights that give each marker word its tier: the tests can predict the output."""
    weights = np.zeros((n_features, 3), dtype=np.float32)
    for word, tier in WORD_TIERS.items():
        weights[zlib.crc32(word.encode()) % n_features, tier] = 20.0  # the word's unigram slot
    return Estimator(weights, np.zeros(3), EstimatorSettings(n_features, temperature, q))


def test_features_are_deterministic_and_unit_length():
    item = ClassifierInput.plain("Write an e-mail to my landlord, please. Please!")
    features = hashed_features(item, N)
    assert features == hashed_features(item, N)
    assert np.isclose(sum(v * v for v in features.values()), 1.0)
    assert all(0 <= slot < N for slot in features)
    assert task_tokens("Hi, THERE!") == ["hi", ",", "there", "!"]
    assert length_bucket(0) == "__len0" and length_bucket(3) == "__len2" and length_bucket(1000) == "__len9"


def test_only_the_task_is_read_so_a_system_prompt_cannot_move_it():
    bare = request_input({"text": "Convert 5 km to miles."})
    wrapped = request_input(
        {
            "messages": [
                {"role": "system", "content": "You are a support agent for ACME. " * 80 + "Reply in JSON."},
                {"role": "user", "content": "Convert 5 km to miles."},
            ]
        }
    )
    assert hashed_features(bare, N) == hashed_features(wrapped, N)


def test_a_huge_task_is_read_by_its_head_and_tail_only():
    huge = "word " * 200_000 + "theorem"
    assert len(task_tokens(huge)) < 2_000 and task_tokens(huge)[-1] == "theorem"


def test_probabilities_follow_the_weights():
    estimator = word_estimator()
    probs = estimator.predict_proba(["hello", "email", ClassifierInput.plain("theorem")])
    assert probs.shape == (3, 3) and np.allclose(probs.sum(axis=1), 1.0)
    assert list(probs.argmax(axis=1)) == [0, 1, 2]
    softer = word_estimator(temperature=50.0).predict_proba(["theorem"])
    assert softer.max() < probs[2].max()  # temperature flattens


def write_folder(folder, section, weights=None, bias=None):
    folder.mkdir(parents=True, exist_ok=True)
    if weights is not None:
        np.savez_compressed(folder / ESTIMATOR_FILE, weights=weights, bias=bias)
    return folder, {"estimator": section} if section is not None else {}


SECTION = {"n_features": N, "temperature": 1.5, "escalation": {"q": 0.6}}


def test_load_reads_the_folder(tmp_path):
    folder, raw = write_folder(tmp_path / "m", SECTION, np.ones((N, 3), np.float32), np.zeros(3))
    estimator = Estimator.load(folder, raw)
    assert estimator is not None and estimator.escalation_q == 0.6 and estimator.settings.temperature == 1.5


def test_load_reads_the_estimators_own_tier_offsets(tmp_path):
    section = {**SECTION, "escalation": {"q": 0.0, "tier_offsets": [0.0, 1.5, -0.5]}}
    folder, raw = write_folder(tmp_path / "m", section, np.ones((N, 3), np.float32), np.zeros(3))
    assert Estimator.load(folder, raw).tier_offsets == (0.0, 1.5, -0.5)
    folder, raw = write_folder(tmp_path / "plain", SECTION, np.ones((N, 3), np.float32), np.zeros(3))
    assert Estimator.load(folder, raw).tier_offsets is None  # fitted before offsets: the plain argmax


def test_a_folder_without_an_estimator_has_none(tmp_path):
    folder, raw = write_folder(tmp_path / "m", None)
    assert Estimator.load(folder, raw) is None


@pytest.mark.parametrize(
    ("section", "weights", "message"),
    [
        (SECTION, None, "has no estimator.npz"),
        ({"n_features": N, "temperature": 1.0}, np.ones((N, 3), np.float32), "lacks or mangles"),
        ({**SECTION, "temperature": -1}, np.ones((N, 3), np.float32), "out-of-range"),
        (SECTION, np.ones((N // 2, 3), np.float32), "mixes files from different runs"),
        (
            {**SECTION, "escalation": {"q": 0.5, "tier_offsets": [0.0, 1.0]}},
            np.ones((N, 3), np.float32),
            "do not match its 3 tiers",
        ),
        (
            {**SECTION, "escalation": {"q": 0.5, "tier_offsets": [0.0, float("nan"), 0.0]}},
            np.ones((N, 3), np.float32),
            "must be finite numbers",
        ),
        (
            {**SECTION, "escalation": {"q": 0.5, "tier_offsets": "high"}},
            np.ones((N, 3), np.float32),
            "lacks or mangles",
        ),
    ],
)
def test_a_broken_estimator_says_what_to_fix(tmp_path, section, weights, message):
    folder, raw = write_folder(tmp_path / "m", section, weights, None if weights is None else np.zeros(3))
    with pytest.raises(ModelFolderError, match=message):
        Estimator.load(folder, raw)


class FakeClassifier:
    def __init__(self, model_dir, raw):
        self.model_dir = model_dir
        self.manifest = type("M", (), {"raw": raw})()


def test_the_setting_turns_it_off(tmp_path, tiny_model_dir, monkeypatch):
    words = word_estimator()
    folder, _ = write_folder(tmp_path / "m", SECTION, words.weights, words.bias)
    (folder / "manifest.json").write_text(json.dumps({"estimator": SECTION}))  # as the manifest stores it
    raw = json.loads((folder / "manifest.json").read_text())
    found = estimator_for(FakeClassifier(folder, raw), tiny_model_dir)
    # The classifier's own folder (tiny_model_dir, the default, has no estimator) and its manifest's values.
    assert found is not None and found.settings == EstimatorSettings(N, 1.5, 0.6)
    np.testing.assert_array_equal(found.weights, words.weights)
    assert found.predict_proba(["hello there", "the theorem"]).argmax(axis=1).tolist() == [0, 2]
    assert estimator_for(FakeClassifier(folder, raw), tiny_model_dir, enabled=False) is None
    monkeypatch.setenv("TIERWISE_ESTIMATOR", "false")
    assert Settings(model_dir=folder).estimator is False  # the setting that the router passes as `enabled`


def test_the_service_answers_from_the_estimator_when_the_encoder_is_too_slow(tmp_path, tiny_classifier):
    from fastapi.testclient import TestClient
    from tierwise.service.app import create_app

    from tests.helpers.doubles import ControllableClassifier
    from tests.helpers.timing import HANG_SECONDS
    from tests.helpers.tiny_model import make_settings, write_model_folder

    folder = write_model_folder(tmp_path / "with-estimator")
    estimator = word_estimator()
    np.savez_compressed(folder / ESTIMATOR_FILE, weights=estimator.weights, bias=estimator.bias)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["estimator"] = {"n_features": N, "temperature": 1.0, "escalation": {"q": 0.7}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    slow = ControllableClassifier(tiny_classifier)
    slow.model_dir = folder
    slow.manifest = type(tiny_classifier.manifest)(**{**tiny_classifier.manifest.__dict__, "raw": manifest})
    settings = make_settings(folder, deadline_ms=30.0)
    app = create_app(settings, classifier_factory=lambda _: slow)
    with TestClient(app) as client:
        slow.mode = "hang"  # no encoder answer until released, after these two: both miss the 30 ms
        try:
            body = client.post("/classify", json={"text": "prove the theorem"}).json()
            easy = client.post("/classify", json={"text": "hello"}).json()
        finally:
            slow.release.set()
        assert (
            body["tier"] == "frontier"
            and body["decided_by"] == "estimator"
            and "estimated" in body["reasons"]
        )
        assert easy["tier"] == "fast" and easy["decided_by"] == "estimator"
        # From here the encoder answers (or raises) at once: a deadline no loaded machine reaches
        # keeps a slow start of the classifier thread from turning these into estimator answers.
        client.app.state.services.router.deadline_ms = HANG_SECONDS * 1000
        slow.mode = "raise"
        assert client.post("/classify", json={"text": "hello"}).json()["decided_by"] == "fallback"
        slow.mode = "ok"
        assert client.post("/classify", json={"text": "hello"}).json()["decided_by"] == "encoder"
        metrics = client.get("/metrics").text
        assert 'tierwise_decisions_by_method_total{decided_by="estimator"}' in metrics
        assert 'tierwise_decisions_by_method_total{decided_by="fallback"} 1.0' in metrics


def test_the_service_answers_a_repeated_request_from_the_score_cache(tiny_model_dir, tiny_classifier):
    from fastapi.testclient import TestClient
    from tierwise.service.app import create_app

    from tests.helpers.doubles import ControllableClassifier
    from tests.helpers.tiny_model import make_settings

    classifier = ControllableClassifier(tiny_classifier)
    app = create_app(
        make_settings(tiny_model_dir, score_cache_size=100), classifier_factory=lambda _: classifier
    )
    with TestClient(app) as client:
        first = client.post("/classify", json={"text": "write an email"}).json()
        classifier.mode = "raise"  # a cached score does not need the classifier
        again = client.post("/classify", json={"text": "write an email"}).json()
        other = client.post("/classify", json={"text": "hello"}).json()
        metrics = client.get("/metrics").text
    assert again["tier"] == first["tier"] == "balanced" and again["decided_by"] == "encoder"
    assert other["decided_by"] == "fallback"
    assert 'tierwise_score_cache_lookups_total{outcome="hit"} 1.0' in metrics
    assert 'tierwise_score_cache_lookups_total{outcome="miss"} 2.0' in metrics
