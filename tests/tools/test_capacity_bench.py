"""The capacity benchmark's bookkeeping, and one short real run against the tiny model."""

import json

import pytest
from tierwise.core.policy_file import DEFAULT_POLICY_FILE, load_policy

from tests.tools.test_load_levels import answer
from tools.capacity_bench import (
    FolderRun,
    cost_vs_unloaded,
    main,
    markdown_report,
    serve_and_drive,
    tier_prices,
)
from tools.load_levels import Level, read_request_bodies


def level(rate: float, encoder: int, estimator: int, p99_ms: float, errors: int = 0) -> Level:
    out = Level("open", rate, errors=errors, seconds=1.0)
    out.decided_by.update({"encoder": encoder, "estimator": estimator})
    out.tiers.update({"fast": encoder + estimator})
    out.latencies_ms = [p99_ms] * 10
    return out


def test_classified_capacity_is_the_highest_rate_held():
    run = FolderRun(
        "m",
        50.0,
        closed=[],
        open=[
            level(50, 100, 0, 20),
            level(100, 995, 5, 45),
            level(200, 900, 100, 49),
            level(400, 100, 0, 80),
        ],
        rss_mib=300,
    )
    assert run.classified_capacity() == 100  # 200: 90% encoder; 400: p99 past the deadline
    assert FolderRun("m", 50.0, [], [level(50, 10, 0, 20, errors=1)], 1).classified_capacity() == 0


def routed(mode: str, answers: list[tuple[int, str, str]]) -> Level:
    out = Level(mode, 1, seconds=1.0)
    for index, decided_by, tier in answers:
        out.record(200, answer(decided_by, tier), 10.0, index)
    return out


def test_the_report_prices_each_level_against_the_unloaded_tiers_of_the_same_bodies(monkeypatch):
    monkeypatch.setattr("tools.capacity_bench.os.cpu_count", lambda: 2)
    prices = tier_prices(load_policy(DEFAULT_POLICY_FILE), 300)
    assert prices["fast"] < prices["balanced"] < prices["frontier"] and "private" in prices
    # Unloaded: body 0 fast, body 1 frontier; body 2 was answered by the estimator there, so it is not a
    # reference and does not count.
    unloaded = routed(
        "unloaded", [(0, "encoder", "fast"), (1, "encoder", "frontier"), (2, "estimator", "fast")]
    )
    same = routed(
        "open", [(1, "estimator", "frontier"), (0, "estimator", "fast"), (2, "estimator", "frontier")]
    )
    # Only bodies 0 answered, twice: a mix of cheap bodies is not "cheaper routing".
    cheap_bodies = routed("open", [(0, "encoder", "fast"), (0, "encoder", "fast")])
    upward = routed("open", [(0, "estimator", "frontier")])
    run = FolderRun("m", 50.0, [], [same, cheap_bodies, upward], 321, unloaded)
    assert run.unloaded_tiers() == {0: "fast", 1: "frontier"}
    assert cost_vs_unloaded(same, run.unloaded_tiers(), prices) == 1.0
    assert cost_vs_unloaded(cheap_bodies, run.unloaded_tiers(), prices) == 1.0
    assert cost_vs_unloaded(upward, run.unloaded_tiers(), prices) == prices["frontier"] / prices["fast"]
    report = markdown_report([run], prices, 5, "note")
    rows = [line for line in report.splitlines() if line.startswith("| m | 1 req/s offered |")]
    assert [row.rsplit("|", 2)[1].strip() for row in rows] == [
        "1.00",
        "1.00",
        f"{prices['frontier'] / prices['fast']:.2f}",
    ]
    assert "Unloaded pass, m: 3 bodies, 66.7% decided by the encoder" in report
    assert "| m | 50 | 1 | 0.5 | 321 |" in report  # deadline, capacity (the all-encoder level), per core, RSS


def test_missing_request_bodies_are_an_error_not_a_fallback(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="make bench-requests"):
        read_request_bodies(tmp_path / "none.jsonl")
    assert main(["--requests", str(tmp_path / "none.jsonl")]) == 2
    assert "make bench-requests" in capsys.readouterr().err


@pytest.mark.slow
def test_a_short_run_against_the_real_service(tmp_path, tiny_model_dir):
    requests = tmp_path / "requests.jsonl"
    bodies = [
        {"text": "hello"},
        {
            "messages": [
                {"role": "system", "content": "be kind"},
                {"role": "user", "content": "prove the theorem"},
            ]
        },
    ]
    requests.write_text("".join(json.dumps({"body": b}) + "\n" for b in bodies))
    run = serve_and_drive(
        tiny_model_dir,
        read_request_bodies(requests),
        [2],
        [20.0],
        1.0,
        5000.0,
        {"TIERWISE_DEADLINE_MS": "5000"},
    )
    [closed], [opened] = run.closed, run.open
    assert run.unloaded is not None and run.unloaded.answered == 2 and set(run.unloaded_tiers()) == {0, 1}
    assert {i for i, _, _ in opened.routed} == {0, 1}  # each answer knows its body
    assert closed.answered > 0 and closed.errors == 0 and closed.share("encoder") == 1.0
    assert opened.answered == opened.sent == 20 and opened.share("encoder") == 1.0
    assert set(opened.tiers) <= {"fast", "frontier"} and run.classified_capacity() == 20.0
