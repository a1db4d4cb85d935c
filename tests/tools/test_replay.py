"""make replay (tools/replay.py): its figures on hand-made outcomes, and one small end-to-end run of the
real service, shadow and controller with the tiny model against the fake judge."""

import argparse
import json
from pathlib import Path

import pytest
from tierwise.core.policy_file import load_policy
from tierwise.training import paths

from tools.fake_llm import FakeScript, FakeServer, policy_strengths
from tools.replay import Draw, Row, flips, run_once
from tools.replay_figures import Outcome, RunResult, allowance, headline, summary, tail_table

TIERS = ("fast", "balanced", "frontier")


def outcome(source, routed, needed, cost=1.0, frontier=10.0, oracle=0.1):
    tier = TIERS[routed] if routed >= 0 else "private"
    return Outcome(source, tier, needed, routed, cost, frontier, oracle, [])


def test_summary_counts_under_routing_cost_and_the_worst_source():
    rows = [outcome("a", 0, 1)] * 10 + [outcome("a", 1, 1)] * 90 + [outcome("b", 2, 0, cost=10.0)] * 60
    s = summary(rows, TIERS)
    assert s["requests"] == 160
    assert s["under_routing"] == pytest.approx(10 / 160)
    assert s["worst_source"] == "a" and s["worst_under_routing"] == pytest.approx(0.1)
    frontier, cost, oracle = 1600.0, 100 + 600.0, 16.0
    assert s["cost_vs_frontier"] == pytest.approx(cost / frontier)
    assert s["savings_share_of_oracle"] == pytest.approx((frontier - cost) / (frontier - oracle))
    assert s["mix"] == pytest.approx({"fast": 10 / 160, "balanced": 90 / 160, "frontier": 60 / 160})


def test_a_private_answer_is_never_counted_as_under_routed():
    assert summary([outcome("a", -1, 2)], TIERS)["under_routing"] == 0.0


def test_small_sources_are_not_the_worst_of_a_window_nor_held_to_the_target():
    rows = [outcome("tiny", 0, 2)] * 10 + [outcome("big", 1, 1)] * 300
    assert summary(rows, TIERS)["worst_source"] == "big"
    table = {row["source"]: row for row in tail_table(rows, 0.05)}
    assert table["tiny"]["held_to_target"] is False and table["tiny"]["passed"] is None
    assert table["big"]["passed"] is True and table["big"]["line"] == pytest.approx(
        0.05 + allowance(0.05, 300)
    )


def test_the_allowance_is_the_one_sided_sampling_margin():
    assert allowance(0.05, 200) == pytest.approx(1.645 * (0.05 * 0.95 / 200) ** 0.5)
    assert allowance(0.05, 800) == pytest.approx(allowance(0.05, 200) / 2)


def test_headline_names_the_worst_held_source():
    rows = [outcome("a", 0, 1)] * 20 + [outcome("a", 1, 1)] * 180 + [outcome("b", 1, 1)] * 250
    head = headline(RunResult("named", rows, judged=7), TIERS, 0.05, 10_000)
    assert head["worst_segment"] == "a" and head["worst_segment_under_routing"] == pytest.approx(0.1)
    assert head["segments_held"] == 2 and head["segments_passed"] == 1 and head["judged"] == 7


def test_judge_noise_is_deterministic_and_near_its_rate():
    flip = flips(3, 0.1)
    draws = [flip(f"request {i}", 0) for i in range(4000)]
    assert draws == [flips(3, 0.1)(f"request {i}", 0) for i in range(4000)]
    assert 0.08 < sum(draws) / len(draws) < 0.12
    assert not any(flips(3, 0.0)(f"request {i}", 1) for i in range(100))


@pytest.mark.slow
def test_a_small_replay_runs_the_service_shadow_and_controller(tiny_model_dir, tmp_path):
    """A few hundred requests through the real app with the tiny model: the controller guards the
    segment whose cheap tiers always fail, the shadow stores verdicts, and a rerun is identical."""
    policy = load_policy(paths.policy_file())
    easy = [Row(f"easy question number {i}?", "easy", 0) for i in range(60)]
    hard = [Row(f"hard proof number {i}, show every step.", "hard", 2) for i in range(60)]
    draws = [Draw(row) for pair in zip(easy * 3, hard * 3, strict=True) for row in pair]
    needs = {d.judge_key(): d.row.needed for d in draws}
    args = argparse.Namespace(
        model_dir=tiny_model_dir,
        shadow_share=0.5,
        alpha=0.05,
        judge_noise=0.0,
        step=40,
        wrapped=False,
        explore_boost=None,
    )

    def replay(folder: Path) -> list[tuple[str, str]]:
        import hashlib

        script = FakeScript(
            strengths=policy_strengths(paths.policy_file()),
            needs=lambda text: needs[hashlib.sha256(text.strip().encode()).hexdigest()],
        )
        server = FakeServer(script).start()
        try:
            folder.mkdir()
            result = run_once("named", draws, policy, args, server, folder)
        finally:
            server.stop()
        assert result.judged > 0 and len(result.outcomes) == len(draws)
        return [(o.source, o.tier) for o in result.outcomes], result

    first, result = replay(tmp_path / "one")
    late_hard = [tier for source, tier in first[-60:] if source == "hard"]
    assert late_hard and all(tier == "frontier" for tier in late_hard)  # guarded: nothing cheap
    assert result.segments_seen["hard"] == len(hard) * 3
    second, _ = replay(tmp_path / "two")
    assert second == first
    assert json.dumps(first)  # plain data
