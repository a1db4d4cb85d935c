"""`tierwise label` reads every log format `tierwise audit` reads ({"text"} rows, plain .txt logs),
and never sends a request with personal data or a secret to the public models it labels with."""

import json

import pytest
from tierwise.cli.main import main as tierwise
from tierwise.core.policy_file import DEFAULT_POLICY_FILE

from tools.fake_llm import FakeScript, FakeServer, policy_strengths

CARD = "4111 1111 1111 1111"


@pytest.fixture(scope="module")
def server():
    fake = FakeServer(FakeScript(policy_strengths(DEFAULT_POLICY_FILE))).start()
    yield fake
    fake.stop()


def label(server, logs, out, *extra):
    argv = ["label", "--input", str(logs), "--output", str(out), "--base-url", server.base_url]
    return tierwise([*argv, "--no-progress", "--backoff", "0.01", *extra])


@pytest.mark.parametrize("dry_run", [True, False])
@pytest.mark.parametrize("kind", ["text-rows", "txt-log"])
def test_text_rows_and_plain_logs_are_labeled(server, tmp_path, capsys, kind, dry_run):
    prompts = ["task 0 needs=0", "task 1 needs=2"]
    if kind == "text-rows":
        logs = tmp_path / "requests.jsonl"
        logs.write_text("".join(json.dumps({"text": p}) + "\n" for p in prompts))
    else:
        logs = tmp_path / "requests.txt"
        logs.write_text("\n".join(prompts) + "\n")
    out = tmp_path / "labeled.jsonl"
    assert label(server, logs, out, "--dry-run" if dry_run else "--yes") == 0
    err = capsys.readouterr().err
    assert "2 requests x 3 tiers" in err
    if dry_run:
        assert not out.exists()
        return
    labeled = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in labeled] == prompts
    assert [r["allowed_tiers"] for r in labeled] == [["fast"], ["frontier"]]


def test_private_requests_are_never_sent(server, tmp_path, capsys):
    logs = tmp_path / "requests.jsonl"
    rows = [
        {"text": "task 0 needs=0"},
        {"text": f"task 1 needs=1, pay with {CARD}"},
        {
            "messages": [
                {"role": "user", "content": "task 2 needs=2"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "type": "function",
                            "function": {"name": "pay", "arguments": json.dumps({"card": CARD})},
                        }
                    ],
                },
                {"role": "user", "content": "task 2 needs=2, go on"},
            ]
        },
    ]
    logs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = len(server.script.calls)
    out = tmp_path / "labeled.jsonl"
    assert label(server, logs, out, "--yes") == 0
    err = capsys.readouterr().err
    assert "requests.jsonl:2: holds credit_card; not sent to any model" in err
    assert "requests.jsonl:3: holds credit_card; not sent to any model" in err
    sent = [json.dumps(call) for call in server.script.calls[before:]]
    assert sent and not any("4111" in call for call in sent)
    assert [json.loads(line)["text"] for line in out.read_text().splitlines()] == ["task 0 needs=0"]
