"""The cheap estimator the router answers from under load (serving/tierwise/core/estimator.py)."""

import json
import math
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
    found = estimator_for(FakeClassifier(folder, raw))
    # The classifier's own folder and its manifest's values.
    assert found is not None and found.settings == EstimatorSettings(N, 1.5, 0.6)
    np.testing.assert_array_equal(found.weights, words.weights)
    assert found.predict_proba(["hello there", "the theorem"]).argmax(axis=1).tolist() == [0, 2]
    assert estimator_for(FakeClassifier(folder, raw), enabled=False) is None
    monkeypatch.setenv("TIERWISE_ESTIMATOR", "false")
    assert Settings(model_dir=folder).estimator is False  # the setting that the router passes as `enabled`


def estimator_app(tmp_path, tiny_classifier, section=None):
    """The service over the tiny model in a folder with `word_estimator()`'s weights and the manifest
    `section` (default: temperature 1, q 0.7), behind a ControllableClassifier the test can hold;
    -> (app, classifier)."""
    from tierwise.service.app import create_app

    from tools.doubles import ControllableClassifier
    from tools.tiny_model import make_settings, write_model_folder

    folder = write_model_folder(tmp_path / "with-estimator")
    estimator = word_estimator()
    np.savez_compressed(folder / ESTIMATOR_FILE, weights=estimator.weights, bias=estimator.bias)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["estimator"] = section or {"n_features": N, "temperature": 1.0, "escalation": {"q": 0.7}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    slow = ControllableClassifier(tiny_classifier)
    slow.model_dir = folder
    slow.manifest = type(tiny_classifier.manifest)(**{**tiny_classifier.manifest.__dict__, "raw": manifest})
    settings = make_settings(folder, deadline_ms=30.0)
    return create_app(settings, classifier_factory=lambda _: slow), slow


def test_the_service_answers_from_the_estimator_when_the_encoder_is_too_slow(tmp_path, tiny_classifier):
    from fastapi.testclient import TestClient

    from tests.helpers.timing import HANG_SECONDS

    app, slow = estimator_app(tmp_path, tiny_classifier)
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


def test_admission_in_the_service_sheds_to_the_estimator_with_its_tier(tmp_path, tiny_classifier, caplog):
    import logging

    from fastapi.testclient import TestClient

    app, slow = estimator_app(tmp_path, tiny_classifier)
    with TestClient(app) as client:
        slow.mode = "hang"
        try:
            client.post("/classify", json={"text": "hello"})  # its batch holds the classifier thread
            # As if batches had been taking a second: the next request would wait >= 1 s, past the
            # admission share of its 30 ms deadline, so it is answered at once instead of queued.
            client.app.state.services.scorer.batch_time.seconds = 1.0
            with caplog.at_level(logging.INFO, logger="tierwise"):
                shed = client.post(
                    "/classify", json={"text": "write an email"}, headers={"X-Request-ID": "shed-1"}
                ).json()
        finally:
            slow.release.set()
    logged = next(r for r in caplog.records if r.getMessage() == "classified" and r.request_id == "shed-1")
    assert logged.classifier_error.startswith("admission")  # shed, not a missed deadline
    # "write an email": 6 grams (3 words, 2 bigrams, __len2), balanced at 20/sqrt(6) against 0 and 0.
    assert (shed["tier"], shed["decided_by"], shed["reasons"]) == ("balanced", "estimator", ["estimated"])
    assert shed["confidence"] == pytest.approx(1 - 1 / (math.exp(20 / math.sqrt(6)) + 2))  # P(<= balanced)


# Worked by hand: a marker word alone is 2 hashed grams (the word and the length bucket __len1), each
# 1/sqrt(2) after L2, so its tier's logit is 20/sqrt(2) and the others' 0. At this temperature that is
# ln 8: probabilities 0.8 for the word's tier, 0.1 for each other one. "hello email" is 4 grams (two
# words, their bigram, __len1), each 1/2: logits 10, 10, 0 -> a tie between fast and balanced.
EIGHTFOLD = 20 / math.sqrt(2) / math.log(8)


def test_an_estimated_answer_is_routed_by_the_estimators_own_q_and_tier_offsets(tmp_path, tiny_classifier):
    from fastapi.testclient import TestClient

    section = {
        "n_features": N,
        "temperature": EIGHTFOLD,
        "escalation": {"q": 0.85, "tier_offsets": [0.0, 0.3, 0.0]},
    }
    app, slow = estimator_app(tmp_path, tiny_classifier, section)
    items = [{"text": "email"}, {"text": "hello"}, {"text": "hello email"}]
    with TestClient(app) as client:
        slow.mode = "hang"  # the whole batch misses its 30 ms deadline
        try:
            email, hello, both = client.post("/classify/batch", json={"items": items}).json()["results"]
        finally:
            slow.release.set()
    assert {a["decided_by"] for a in (email, hello, both)} == {"estimator"}
    # "email": P = (0.1, 0.8, 0.1); cumulative 0.1, 0.9, 1: q 0.85 is met at balanced, its most likely.
    assert email["probabilities"] == pytest.approx({"fast": 0.1, "balanced": 0.8, "frontier": 0.1})
    assert (email["tier"], email["complexity_tier"], email["predicted_tier"]) == ("balanced",) * 3
    assert not email["escalated"] and email["reasons"] == ["estimated"]
    assert email["confidence"] == pytest.approx(0.9) and email["model"] == "gpt-4.1"
    # "hello": P = (0.8, 0.1, 0.1), most likely fast (0.3 on balanced does not reach ln 8), but
    # P(fast suffices) = 0.8 < 0.85: the estimator's q escalates it to balanced (cumulative 0.9). The
    # encoder's q (0.7, the folder's) would have kept it at fast.
    assert hello["probabilities"] == pytest.approx({"fast": 0.8, "balanced": 0.1, "frontier": 0.1})
    assert (hello["tier"], hello["predicted_tier"], hello["escalated"]) == ("balanced", "fast", True)
    assert hello["reasons"] == ["estimated", "low_confidence"] and hello["confidence"] == pytest.approx(0.9)
    # "hello email": P = (e^a, e^a, 1) / (2e^a + 1), a = 10 / EIGHTFOLD; the tie goes to balanced by its
    # +0.3 offset (the plain argmax says fast), so the answer is balanced and not an escalation.
    a = 10 / EIGHTFOLD
    p = math.exp(a) / (2 * math.exp(a) + 1)
    assert both["probabilities"] == pytest.approx({"fast": p, "balanced": p, "frontier": 1 - 2 * p})
    assert (both["tier"], both["predicted_tier"], both["escalated"]) == ("balanced", "balanced", False)
    assert both["reasons"] == ["estimated"] and both["confidence"] == pytest.approx(2 * p)


def test_private_data_outside_the_task_goes_private_sized_by_the_estimator(tmp_path, tiny_classifier):
    from fastapi.testclient import TestClient

    app, slow = estimator_app(tmp_path, tiny_classifier)
    messages = [
        {"role": "system", "content": "You answer for Jane; her replies go to jane.doe@example.com"},
        {"role": "user", "content": "Prove the theorem"},
    ]
    with TestClient(app) as client:
        slow.mode = "hang"
        try:
            body = client.post("/classify", json={"messages": messages}).json()
        finally:
            slow.release.set()
    # The privacy rule reads every message; the estimator reads the task alone: "prove the theorem"
    # is 6 grams (3 words, 2 bigrams, __len2), so frontier's logit is 20/sqrt(6) against 0 and 0.
    assert (body["tier"], body["model"], body["decided_by"]) == (
        "private",
        "llama-3.3-70b-selfhosted",
        "estimator",
    )
    assert body["reasons"] == ["estimated", "private_data"]
    assert body["complexity_tier"] == body["predicted_tier"] == "frontier"  # the size of private model
    frontier = math.exp(20 / math.sqrt(6)) / (math.exp(20 / math.sqrt(6)) + 2)
    assert body["probabilities"]["frontier"] == pytest.approx(frontier)
    assert body["confidence"] == pytest.approx(frontier)  # at the top: 1 - P(balanced would do)


def test_the_service_answers_a_repeated_request_from_the_score_cache(tiny_model_dir, tiny_classifier):
    from fastapi.testclient import TestClient
    from tierwise.service.app import create_app

    from tools.doubles import ControllableClassifier
    from tools.tiny_model import make_settings

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
