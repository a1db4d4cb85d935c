"""`tierwise classify`: the policy's routing per row, as the service decides it; `--raw` the classifier alone."""

import json
from pathlib import Path

import pytest
from tierwise.cli.main import main
from tierwise.core.policy import RoutingInput
from tierwise.core.policy_file import DEFAULT_POLICY_FILE, load_policy
from tierwise.core.request_text import request_input

from tools.tiny_model import FAST_WORDS, FRONTIER_WORDS

FAST_TEXT = " ".join(FAST_WORDS)
ROWS = [
    {"text": FAST_TEXT, "user": "u1"},  # the classifier's tier, untouched by any rule
    {"text": FAST_TEXT, "min_tier": "balanced"},  # the caller's floor
    {"text": FAST_TEXT, "route": "legal-review"},  # a route pinned to frontier by the policy
    {"text": f"{FAST_TEXT} mail me at jane.doe@example.com"},  # personal data: the private tier
    {"messages": [{"role": "user", "content": " ".join(FRONTIER_WORDS)}]},
]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def classify(tmp_path: Path, model: Path, *extra: str, rows: list[dict] = ROWS) -> list[dict]:
    source = write_rows(tmp_path / "requests.jsonl", rows)
    out = tmp_path / "routed.jsonl"
    code = main(["classify", "--input", str(source), "--output", str(out), "--model", str(model), *extra])
    assert code == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_rows_are_routed_by_the_policy_like_the_service(tiny_model_dir, tiny_classifier, tmp_path):
    routed = classify(tmp_path, tiny_model_dir)
    policy = load_policy(DEFAULT_POLICY_FILE)
    for row, out in zip(ROWS, routed, strict=True):
        read = request_input(row)
        request = RoutingInput(
            text=read.text, min_tier=row.get("min_tier"), route=row.get("route"), request=read
        )
        (probs,), (tokens,) = tiny_classifier.predict_proba([read])
        decision = policy.decide(request, probs, int(tokens), tiny_classifier.manifest.escalation_q)
        assert out["tier"] == decision.tier and out["model"] == decision.model
        assert out["reasons"] == list(decision.reasons) and out["fallbacks"] == list(decision.fallbacks)
        assert out["model_version"] == tiny_classifier.version and out["decided_by"] == "encoder"
    assert routed[0]["user"] == "u1" and routed[0]["tier"] == "fast" and routed[0]["reasons"] == []
    assert routed[1]["tier"] == "balanced" and "min_tier" in routed[1]["reasons"]
    assert routed[2]["tier"] == "frontier" and "route_override" in routed[2]["reasons"]
    assert routed[3]["tier"] == "private" and "private_data" in routed[3]["reasons"]
    assert routed[4]["tier"] == "frontier"


def test_raw_gives_the_classifier_alone(tiny_model_dir, tiny_classifier, tmp_path):
    raw = classify(tmp_path, tiny_model_dir, "--raw")
    predictions = tiny_classifier.classify([request_input(row) for row in ROWS])
    assert [r["tier"] for r in raw] == [p.tier for p in predictions]
    assert [r["tier"] for r in raw[:4]] == ["fast"] * 4  # no floor, no route, no privacy rule
    assert all("reasons" not in r and r.get("model") is None for r in raw)
    assert raw[0]["probabilities"] == pytest.approx(predictions[0].probabilities)


def test_q_replaces_the_escalation_target(tiny_model_dir, tmp_path):
    routed = classify(tmp_path, tiny_model_dir, "--q", "1.0", rows=[{"text": FAST_TEXT}])
    assert routed[0]["tier"] == "frontier" and routed[0]["reasons"] == ["low_confidence"]


def test_unusable_rows_are_reported_and_skipped(tiny_model_dir, tmp_path, capsys):
    rows = [
        {"text": FAST_TEXT},
        {"text": FAST_TEXT, "max_tier": "huge"},
        {"text": ""},
        {"text": "hi", "route": 3},
    ]
    routed = classify(tmp_path, tiny_model_dir, rows=rows)
    assert len(routed) == 1
    err = capsys.readouterr().err
    assert "line 2: 'max_tier' is 'huge', which is not a tier" in err
    assert "line 3: 'text' is empty" in err and "line 4: 'route' must be a string" in err
    assert "3 unusable row(s) skipped" in err
