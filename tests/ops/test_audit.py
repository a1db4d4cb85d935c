"""tierwise audit: request formats, exact totals, Parquet, and Ray Data agreeing with one process."""

import json
import random
from collections import Counter

import pytest
from tierwise.cli.main import main as cli_main
from tierwise.core.policy import RoutingInput
from tierwise.core.policy_file import load_policy
from tierwise.core.request_text import RequestTextError
from tierwise.ops.audit import AuditOptions, run_audit
from tierwise.ops.audit_report import summarize, write_audit
from tierwise.ops.audit_totals import AuditTotals
from tierwise.ops.request_logs import plan_chunks, request_text
from tierwise.service.settings import DEFAULT_POLICY_FILE

from tests.helpers.tiny_model import BALANCED_WORDS, FAST_WORDS, FRONTIER_WORDS, NEUTRAL_WORDS

WORDS = FAST_WORDS + BALANCED_WORDS + FRONTIER_WORDS + NEUTRAL_WORDS
LOCAL_OPTIONS = AuditOptions(batch_size=32, threads=1, show_progress=False)


def prompts(count, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30))) for _ in range(count)]


def as_request(index, text):
    kind = index % 4
    if kind == 0:
        return {"model": "gpt-4.1", "messages": [{"role": "user", "content": text}]}
    if kind == 1:
        return {"text": text}
    if kind == 2:
        body = {"model": "x", "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]}
        return {"custom_id": str(index), "method": "POST", "url": "/v1/chat/completions", "body": body}
    return {"prompt": text}


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("logs")
    texts = prompts(300)
    jsonl = folder / "requests.jsonl"
    with open(jsonl, "w") as sink:
        for index, text in enumerate(texts[:200]):
            sink.write(json.dumps(as_request(index, text)) + "\n")
        sink.write("{broken\n")
        sink.write(json.dumps({"model": "x"}) + "\n")
    plain = folder / "prompts.txt"
    plain.write_text("\n".join(texts[200:250]) + "\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = folder / "requests.parquet"
    pq.write_table(pa.table({"text": texts[250:]}), parquet, row_group_size=20)
    return {"paths": [jsonl, plain, parquet], "texts": texts}


def test_request_text_formats():
    assert request_text({"messages": [{"role": "user", "content": "hi"}]}) == "hi"
    assert request_text({"body": {"messages": [{"role": "user", "content": "hi"}]}}) == "hi"
    assert request_text({"prompt": ["a", "b"]}) == "a\nb"
    assert request_text({"input": "hello"}) == "hello"
    responses = {"input": [{"role": "user", "content": [{"type": "input_text", "text": "prove it"}]}]}
    assert request_text(responses) == "prove it"
    with pytest.raises(RequestTextError, match="messages"):
        request_text({"model": "x"})


def test_chunks_cover_every_row(logs):
    chunks = plan_chunks(logs["paths"], batch_size=32)
    assert sum(c.rows for c in chunks) == 202 + 50 + 50
    assert all(c.rows <= 32 for c in chunks)
    parquet = [c for c in chunks if c.kind == "parquet"]
    assert {c.first_line for c in parquet} == {0, 1, 2}  # row groups of 20, 20, 10


def test_local_audit_totals_are_exact(logs, tiny_model_dir, tiny_classifier):
    summary, meta = run_audit(logs["paths"], tiny_model_dir, DEFAULT_POLICY_FILE, LOCAL_OPTIONS)
    policy = load_policy(DEFAULT_POLICY_FILE)
    probabilities, counts = tiny_classifier.predict_proba(logs["texts"])
    q = tiny_classifier.manifest.escalation_q
    decisions = [
        policy.decide(RoutingInput(text), p, int(n), q)
        for text, p, n in zip(logs["texts"], probabilities, counts, strict=True)
    ]
    expected = Counter(d.tier for d in decisions)
    assert summary["requests"] == 300 and summary["unreadable"] == 2
    assert {t: e["requests"] for t, e in summary["tier_mix"].items() if e["requests"]} == dict(expected)
    assert summary["input_tokens"] == sum(int(n) for n in counts)
    assert summary["escalated"] == sum(d.escalated for d in decisions)
    assert [e[0].rsplit(":", 1)[1] for e in summary["errors"]] == ["201", "202"]
    frontier = policy.tiers[-1]
    all_frontier = (
        sum(int(n) for n in counts) * frontier.input_price_per_million
        + 300 * policy.expected_output_tokens * frontier.output_price_per_million
    ) / 1e6
    assert summary["all_frontier_usd"] == pytest.approx(all_frontier)
    assert 0 < summary["routed_usd"] < summary["all_frontier_usd"]
    assert summary["savings_usd"] == pytest.approx(summary["all_frontier_usd"] - summary["routed_usd"])
    assert meta["model_version"] == "tiny@test-test" and meta["requests_per_second"] > 0


def test_summary_projection_and_report(tmp_path):
    policy = load_policy(DEFAULT_POLICY_FILE)
    totals = AuditTotals(
        requests=4, routed=Counter(fast=2, frontier=2), input_tokens=Counter(fast=100, frontier=100)
    )
    summary = summarize(totals, policy, period_days=15)
    fast, frontier = policy.tiers[0], policy.tiers[-1]
    routed = (100 * fast.input_price_per_million + 600 * fast.output_price_per_million) / 1e6
    routed += (100 * frontier.input_price_per_million + 600 * frontier.output_price_per_million) / 1e6
    assert summary["routed_usd"] == pytest.approx(routed)
    assert summary["projected_monthly_savings_usd"] == pytest.approx(2 * summary["savings_usd"])
    meta = {"logs": ["x"], "model_version": "v", "policy": "p", "engine": "local", "seconds": 1.0}
    meta["requests_per_second"] = 4.0
    path = write_audit(summary, meta, tmp_path)
    assert "What routing would save" in path.read_text()
    assert (tmp_path / "audit_mix_cost.png").stat().st_size > 1000


def test_audit_command_reports_bad_input(tmp_path, tiny_model_dir, capsys):
    missing = tmp_path / "nope.jsonl"
    assert (
        cli_main(
            ["audit", "--input", str(missing), "--model", str(tiny_model_dir), "--out-dir", str(tmp_path)]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    odd = tmp_path / "logs.csv"
    odd.write_text("a,b\n")
    assert (
        cli_main(["audit", "--input", str(odd), "--model", str(tiny_model_dir), "--out-dir", str(tmp_path)])
        == 2
    )
    assert ".parquet" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_ray_audit_matches_single_process(logs, tiny_model_dir, tmp_path):
    pytest.importorskip("ray")
    local, _ = run_audit(logs["paths"], tiny_model_dir, DEFAULT_POLICY_FILE, LOCAL_OPTIONS)
    out = tmp_path / "ray"
    code = cli_main(
        [
            "audit",
            "--input",
            *map(str, logs["paths"]),
            "--model",
            str(tiny_model_dir),
            "--engine",
            "ray",
            "--ray-actors",
            "2",
            "--batch-size",
            "32",
            "--out-dir",
            str(out),
            "--no-plots",
            "--no-progress",
        ]
    )
    assert code == 0
    on_ray = json.loads((out / "audit.json").read_text())
    assert on_ray["meta"]["engine"] == "ray"
    assert on_ray["summary"] == json.loads(json.dumps(local))
