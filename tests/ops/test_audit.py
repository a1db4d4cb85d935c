"""tierwise audit: request formats, exact totals, Parquet, and Ray Data agreeing with one process."""

import json
import math
import random
from collections import Counter

import pytest
from tierwise.cli.main import main as cli_main
from tierwise.core.policy_file import DEFAULT_POLICY_FILE, load_policy
from tierwise.core.request_text import RequestTextError
from tierwise.ops.audit import AuditOptions, run_audit
from tierwise.ops.audit_report import summarize, write_audit
from tierwise.ops.audit_totals import AuditTotals
from tierwise.ops.request_logs import plan_chunks, request_text

from tools.tiny_model import BALANCED_WORDS, FAST_WORDS, FRONTIER_WORDS, NEUTRAL_WORDS, TIERS

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


def tiny_route(text: str) -> tuple[str, bool]:
    """The tiny model's routed tier and whether it escalated, worked from its construction alone
    (tools/tiny_model.py), not from the classifier or the policy: each marker word adds 9 to its
    tier's logit, averaged over [CLS] + words + [SEP], divided by the temperature 1.5; then the lowest
    tier whose cumulative probability reaches q 0.7, never below the most likely tier. (These prompts
    are short and carry no private data or route, so no policy rule applies.)"""
    words = text.split()
    marks = [sum(w in group for w in words) for group in (FAST_WORDS, BALANCED_WORDS, FRONTIER_WORDS)]
    z = [9.0 * m / (len(words) + 2) / 1.5 for m in marks]
    e = [math.exp(v - max(z)) for v in z]
    p = [v / sum(e) for v in e]
    likely = p.index(max(p))
    confident = next(t for t in range(3) if sum(p[: t + 1]) >= 0.7 or t == 2)
    return TIERS[max(likely, confident)], confident > likely


def test_tiny_route_is_worked_right():
    assert tiny_route("hi") == ("fast", False)  # P(fast) e^2 / (e^2 + 2) = 0.79
    assert tiny_route("hello the the the the") == ("balanced", True)  # P(fast) 0.54, + P(balanced) 0.77
    assert tiny_route("the") == ("frontier", True)  # uniform: 1/3, 2/3 < 0.7
    assert tiny_route("prove the theorem") == ("frontier", False)


def test_local_audit_totals_are_exact(logs, tiny_model_dir):
    summary, meta = run_audit(logs["paths"], tiny_model_dir, DEFAULT_POLICY_FILE, LOCAL_OPTIONS)
    policy = load_policy(DEFAULT_POLICY_FILE)
    routes = [tiny_route(text) for text in logs["texts"]]
    tokens = sum(len(text.split()) for text in logs["texts"])  # every word is one token of the vocabulary
    expected = Counter(tier for tier, _ in routes)
    assert set(expected) == set(TIERS) and sum(escalated for _, escalated in routes) > 100
    assert summary["requests"] == 300 and summary["unreadable"] == 2
    assert {t: e["requests"] for t, e in summary["tier_mix"].items() if e["requests"]} == dict(expected)
    assert summary["input_tokens"] == tokens
    assert summary["escalated"] == sum(escalated for _, escalated in routes)
    assert [e[0].rsplit(":", 1)[1] for e in summary["errors"]] == ["201", "202"]
    frontier = policy.tiers[-1]
    all_frontier = (
        tokens * frontier.input_price_per_million
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
