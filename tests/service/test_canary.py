"""Canary: a deterministic share of request ids decided by a candidate model, visible everywhere."""

import json

import pytest
import yaml
from fastapi.testclient import TestClient
from tierwise.cli.main import main as cli_main
from tierwise.core.classifier import TierClassifier
from tierwise.core.model_folder import ModelFolderError
from tierwise.core.policy import PolicyError
from tierwise.core.policy_file import DEFAULT_POLICY_FILE, parse_policy
from tierwise.service.app import create_app
from tierwise.service.canary import canary_fraction, goes_to_canary

from tools.tiny_model import make_settings, write_model_folder

SHARE = 0.5


def test_canary_share_is_within_tolerance_and_deterministic():
    ids = [f"req-{i}" for i in range(20000)]
    for share in (0.05, 0.3):
        hits = sum(goes_to_canary(request_id, share) for request_id in ids)
        assert abs(hits / len(ids) - share) < 0.01
    assert canary_fraction("abc") == canary_fraction("abc")
    assert 0.0 <= canary_fraction("") < 1.0


def test_policy_canary_parsing():
    raw = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    assert parse_policy(raw).canary is None
    policy = parse_policy({**raw, "canary": {"model_dir": "models/candidate", "share": 0.1}})
    assert policy.canary.share == 0.1 and str(policy.canary.model_dir) == "models/candidate"
    assert parse_policy({**raw, "canary": {"model_dir": "m", "share": 0}}).canary is None
    with pytest.raises(PolicyError, match="share"):
        parse_policy({**raw, "canary": {"model_dir": "m", "share": 1.5}})
    with pytest.raises(PolicyError, match="model_dir"):
        parse_policy({**raw, "canary": {"share": 0.1}})


@pytest.fixture(scope="module")
def canary_setup(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("canary")
    candidate = write_model_folder(folder / "candidate")
    manifest = json.loads((candidate / "manifest.json").read_text())
    manifest["name"] = "candidate"
    (candidate / "manifest.json").write_text(json.dumps(manifest))
    policy = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    policy["canary"] = {"model_dir": str(candidate), "share": SHARE}
    policy_file = folder / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy))
    return {"policy_file": policy_file, "db": f"sqlite:///{folder / 'decisions.sqlite'}"}


@pytest.fixture(scope="module")
def client(canary_setup, tiny_model_dir):
    settings = make_settings(
        tiny_model_dir,
        policy_file=canary_setup["policy_file"],
        record_decisions=True,
        decision_db=canary_setup["db"],
        record_prompts=True,
    )

    def factory(s):
        return TierClassifier(s.model_dir, intra_op_threads=1)

    with TestClient(create_app(settings, classifier_factory=factory)) as test_client:
        yield test_client


def expected_version(request_id):
    return "candidate@test-test" if goes_to_canary(request_id, SHARE) else "tiny@test-test"


def test_responses_metrics_and_log_say_which_version_decided(client, canary_setup, tiny_model_dir, tmp_path):
    ids = [f"canary-test-{i}" for i in range(30)]
    for request_id in ids:
        body = client.post(
            "/classify", json={"text": "write an email"}, headers={"X-Request-ID": request_id}
        ).json()
        assert body["model_version"] == expected_version(request_id)
        assert body["tier"] == "balanced"
    versions = {expected_version(i) for i in ids}
    assert versions == {"candidate@test-test", "tiny@test-test"}  # both sides were exercised

    batch = client.post(
        "/classify/batch", json={"items": [{"text": "hi"}] * 6}, headers={"X-Request-ID": "batch-7"}
    ).json()
    for result in batch["results"]:
        assert result["model_version"] == expected_version(result["request_id"])

    metrics = client.get("/metrics").text
    for version in versions:
        assert f'tierwise_decisions_by_version_total{{model_version="{version}"' in metrics
    assert client.get("/model").json()["canary"] == {
        "model_version": "candidate@test-test",
        "model_dir": str(canary_setup["policy_file"].parent / "candidate"),
        "share": SHARE,
    }

    for request_id in ids:
        response = client.post("/feedback", json={"request_id": request_id, "outcome": "balanced"})
        assert response.json()["model_version"] == expected_version(request_id)
    out = tmp_path / "report"
    args = [
        "report",
        "--db",
        canary_setup["db"],
        "--out-dir",
        str(out),
        "--no-plots",
        "--model",
        str(tiny_model_dir),
    ]
    assert cli_main(args) == 0
    report = json.loads((out / "report.json").read_text())
    by_version = report["versions"]
    assert set(by_version) == versions
    assert sum(v["with_feedback"] for v in by_version.values()) == len(ids)
    for version, summary in by_version.items():
        assert summary["with_feedback"] == sum(expected_version(i) == version for i in ids)
        assert summary["accuracy_predicted"] == 1.0
    assert "canary comparison" in (out / "report.md").read_text()

    candidate = canary_setup["policy_file"].parent / "candidate"
    args += ["--compare-models", str(tiny_model_dir), str(candidate)]
    assert cli_main(args) == 0
    rescored = json.loads((out / "report.json").read_text())["rescored"]
    assert set(rescored) == versions
    for summary in rescored.values():  # both models on all the same 30 labeled prompts
        assert summary["labeled"] == len(ids) and summary["accuracy_predicted"] == 1.0
    assert "re-scored on the same labeled requests" in (out / "report.md").read_text()


def test_a_missing_candidate_stops_start_up(tmp_path, tiny_model_dir, tiny_classifier):
    policy = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    policy["canary"] = {"model_dir": str(tmp_path / "nope"), "share": 0.1}
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy))
    settings = make_settings(tiny_model_dir, policy_file=policy_file)

    def factory(s):
        return TierClassifier(s.model_dir, intra_op_threads=1)

    # The folder check's own error, naming the folder and what to do: not any exception that mentions it.
    missing = r"Model folder \S+/nope does not exist; pass --model or set TIERWISE_MODEL_DIR"
    with (
        pytest.raises(ModelFolderError, match=missing),
        TestClient(create_app(settings, classifier_factory=factory)),
    ):
        pass


def test_a_slow_canary_is_answered_by_the_estimator_of_its_own_folder(
    tmp_path, tiny_model_dir, tiny_classifier
):
    import numpy as np

    from tests.core.test_estimator import ESTIMATOR_FILE, N, word_estimator
    from tools.doubles import ControllableClassifier

    candidate = write_model_folder(tmp_path / "candidate")
    manifest = json.loads((candidate / "manifest.json").read_text())
    manifest["name"] = "candidate"
    manifest["estimator"] = {"n_features": N, "temperature": 1.0, "escalation": {"q": 0.7}}
    (candidate / "manifest.json").write_text(json.dumps(manifest))
    words = word_estimator()
    np.savez_compressed(candidate / ESTIMATOR_FILE, weights=words.weights, bias=words.bias)
    policy = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    policy["canary"] = {"model_dir": str(candidate), "share": 1.0}  # every request meets the candidate
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy))
    held = ControllableClassifier(TierClassifier(candidate, intra_op_threads=1))
    # The primary (tiny_model_dir) has no estimator: only the candidate's folder can answer in time.
    settings = make_settings(tiny_model_dir, policy_file=policy_file, deadline_ms=30.0)
    app = create_app(
        settings, classifier_factory=lambda s: held if s.model_dir == candidate else tiny_classifier
    )
    with TestClient(app) as client:
        held.mode = "hang"  # the candidate's encoder misses every 30 ms deadline until released
        try:
            email = client.post("/classify", json={"text": "write an email"}).json()
            theorem = client.post("/classify", json={"text": "prove the theorem"}).json()
        finally:
            held.release.set()
    # By hand: each is 6 grams (3 words, 2 bigrams, __len2), its marker word's tier at 20/sqrt(6) ~ 8.2
    # against 0 and 0: P > 0.999, no escalation at q 0.7.
    for body, tier in ((email, "balanced"), (theorem, "frontier")):
        assert (body["tier"], body["decided_by"], body["reasons"]) == (tier, "estimator", ["estimated"])
        assert body["model_version"] == "candidate@test-test" and body["predicted_tier"] == tier
