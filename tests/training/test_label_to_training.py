"""Request logs -> `tierwise label` (local scripted server) -> build_dataset --no-public -> a tiny train."""

import json

import pytest
from tierwise.cli.main import main as tierwise
from tierwise.core.policy_file import DEFAULT_POLICY_FILE
from tierwise.training import build_dataset

from tools.fake_llm import FakeScript, fake_server, policy_strengths

TOPICS = ["norway", "kenya", "peru", "laos", "chile", "oman", "fiji", "mali", "cuba", "iran"]


@pytest.mark.slow
def test_logs_to_labels_to_a_trained_model(tmp_path):
    logs = tmp_path / "requests.jsonl"
    with open(logs, "w") as sink:
        for index in range(60):
            task = f"Tell me about {TOPICS[index % 10]} item {index} (needs={index % 3})."
            sink.write(
                json.dumps({"model": "gpt-4.1", "messages": [{"role": "user", "content": task}]}) + "\n"
            )
    labeled = tmp_path / "labeled.jsonl"
    with fake_server(FakeScript(policy_strengths(DEFAULT_POLICY_FILE))) as server:
        code = tierwise(
            [
                "label",
                "--input",
                str(logs),
                "--output",
                str(labeled),
                "--base-url",
                server.base_url,
                "--yes",
                "--no-progress",
            ]
        )
    assert code == 0
    rows = [json.loads(line) for line in labeled.read_text().splitlines()]
    assert len(rows) == 60 and {tuple(r["allowed_tiers"]) for r in rows} == {
        ("fast",),
        ("balanced",),
        ("frontier",),
    }

    data = tmp_path / "data"
    assert (
        build_dataset.main(
            ["--no-public", "--user-data", str(labeled), "--out-dir", str(data), "--heldout-sources"]
        )
        == 0
    )
    summary = json.loads((data / "dataset.json").read_text())
    assert sum(summary["counts"].values()) == 60 and summary["malformed_rows"] == []

    from tierwise.training.train import main as train_main  # torch: imported only when the test runs

    model = tmp_path / "model"
    args = ["--base-model", "tiny-random", "--max-steps", "2", "--batch-size", "8", "--name", "judged"]
    assert train_main([*args, "--data-dir", str(data), "--out-dir", str(model)]) == 0
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["tiers"] == ["fast", "balanced", "frontier"]
