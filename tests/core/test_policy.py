import asyncio
from pathlib import Path

import numpy as np
import pytest
from tierwise.core.policy import (
    CLASSIFIER_UNAVAILABLE,
    LONG_CONTEXT,
    LOW_CONFIDENCE,
    MAX_TIER,
    MIN_TIER,
    PRIVATE_DATA,
    ROUTE_OVERRIDE,
    PolicyError,
    RoutingInput,
    UnknownTierError,
)
from tierwise.core.policy_file import DEFAULT_POLICY_FILE, load_policy, parse_policy
from tierwise.service.batcher import DirectScorer
from tierwise.service.routing import Router

from tests.helpers.timing import HANG_SECONDS, HeldCalls

POLICY_YAML = {
    "tiers": [
        {"name": "fast", "models": ["small-a", "small-b"], "context_tokens": 1000},
        {"name": "balanced", "models": ["mid"], "context_tokens": 8000},
        {"name": "frontier", "models": ["big-1", "big-2"], "context_tokens": 200000},
    ],
    "escalation_q": None,
    "long_context": {"threshold_tokens": 500, "min_tier": "balanced"},
    "private_tier": {"name": "private", "models": ["self-hosted"], "context_tokens": 32000},
    "routes": {"legal": {"tier": "frontier"}, "support": {"min_tier": "balanced"}, "chit": {"tier": "fast"}},
    "deadline_ms": 50,
}

CONFIDENT_FAST = [0.9, 0.07, 0.03]
UNSURE_FAST = [0.5, 0.3, 0.2]  # cumulative 0.5, 0.8, 1.0


@pytest.fixture
def policy():
    return parse_policy(POLICY_YAML)


def decide(policy, probabilities=CONFIDENT_FAST, tokens=20, q=0.7, text="hello", **request):
    return policy.decide(RoutingInput(text=text, **request), probabilities, tokens, default_q=q)


def test_default_policy_file_loads():
    policy = load_policy(DEFAULT_POLICY_FILE)
    assert policy.tier_names == ("fast", "balanced", "frontier")
    assert policy.private_tier is not None
    assert policy.deadline_ms == 50


def test_confident_prediction_is_kept(policy):
    decision = decide(policy)
    assert decision.tier == "fast"
    assert decision.predicted_tier == "fast"
    assert not decision.escalated
    assert decision.reasons == ()
    assert decision.confidence == pytest.approx(0.9)
    assert decision.model == "small-a"
    assert decision.fallbacks == ("small-b", "mid", "big-1", "big-2")


def test_low_confidence_escalates_to_the_lowest_tier_reaching_q(policy):
    decision = decide(policy, UNSURE_FAST, q=0.7)
    assert (decision.tier, decision.predicted_tier) == ("balanced", "fast")
    assert decision.escalated and decision.reasons == (LOW_CONFIDENCE,)
    assert decision.confidence == pytest.approx(0.8)
    assert decision.fallbacks == ("big-1", "big-2")
    assert decide(policy, UNSURE_FAST, q=0.85).tier == "frontier"
    assert decide(policy, UNSURE_FAST, q=0.4).tier == "fast"


def test_policy_q_overrides_the_model_q():
    policy = parse_policy({**POLICY_YAML, "escalation_q": 0.95})
    assert decide(policy, CONFIDENT_FAST, q=0.1).tier == "balanced"


def test_long_context_threshold_sets_a_floor(policy):
    decision = decide(policy, tokens=600)
    assert decision.tier == "balanced" and decision.reasons == (LONG_CONTEXT,)
    assert decide(policy, tokens=500).tier == "fast"


def test_context_limit_goes_to_a_tier_that_holds_the_prompt(policy):
    assert decide(policy, tokens=9000).tier == "frontier"
    capped = decide(policy, tokens=9000, max_tier="fast")
    assert capped.tier == "frontier"  # a tier that cannot hold the prompt would only fail
    assert LONG_CONTEXT in capped.reasons
    assert decide(policy, tokens=10**7).tier == "frontier"


def test_private_data_goes_to_the_private_tier(policy):
    decision = decide(policy, text="my card is 4111 1111 1111 1111", tokens=10)
    assert decision.tier == "private"
    assert decision.model == "self-hosted"
    assert decision.fallbacks == ()  # never fall back to an external model
    assert PRIVATE_DATA in decision.reasons
    assert decision.private_data == ("credit_card",)
    assert decide(policy, text="Explain 4111 1111 1111 1112 digits").tier == "fast"


def test_private_data_without_private_tier_is_routed_normally():
    policy = parse_policy({k: v for k, v in POLICY_YAML.items() if k != "private_tier"})
    decision = decide(policy, text="mail me at a.person@example.org")
    assert decision.tier == "fast" and decision.private_data == ("email",)
    assert PRIVATE_DATA not in decision.reasons


def test_min_and_max_tier(policy):
    raised = decide(policy, min_tier="balanced")
    assert raised.tier == "balanced" and raised.reasons == (MIN_TIER,)
    capped = decide(policy, UNSURE_FAST, q=0.95, max_tier="balanced")
    assert capped.tier == "balanced" and capped.reasons == (LOW_CONFIDENCE, MAX_TIER)
    assert capped.fallbacks == ()  # nothing above the cap
    assert decide(policy, min_tier="fast").reasons == ()


def test_unknown_or_inverted_tier_bounds_are_rejected(policy):
    with pytest.raises(UnknownTierError, match="min_tier.*huge.*fast, balanced, frontier"):
        decide(policy, min_tier="huge")
    with pytest.raises(UnknownTierError, match="max_tier"):
        decide(policy, max_tier="private")
    with pytest.raises(ValueError, match="above"):
        decide(policy, min_tier="frontier", max_tier="fast")


def test_route_overrides(policy):
    pinned = decide(policy, route="legal")
    assert pinned.tier == "frontier" and pinned.reasons == (ROUTE_OVERRIDE,)
    pinned_down = decide(policy, UNSURE_FAST, q=0.95, route="chit")
    assert pinned_down.tier == "fast" and ROUTE_OVERRIDE in pinned_down.reasons
    floor = decide(policy, route="support")
    assert floor.tier == "balanced" and floor.reasons == (ROUTE_OVERRIDE,)
    assert decide(policy, route="unknown-task").tier == "fast"
    assert decide(policy, route="legal", max_tier="balanced").tier == "balanced"


def test_unavailable_classifier_fails_upward(policy):
    decision = policy.unavailable_decision(RoutingInput(text="hello"))
    assert decision.tier == "frontier"
    assert decision.reasons == (CLASSIFIER_UNAVAILABLE,)
    assert decision.predicted_tier is None and decision.escalated
    assert decision.probabilities == {}
    assert decision.model == "big-1" and decision.fallbacks == ("big-2",)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"tiers": [{"name": "only", "models": ["m"]}]}, "at least two tiers"),
        (
            {**POLICY_YAML, "long_context": {"threshold_tokens": 5, "min_tier": "nope"}},
            "long_context.min_tier",
        ),
        ({**POLICY_YAML, "routes": {"x": {"tier": "nope"}}}, "routes.x.tier"),
        ({**POLICY_YAML, "routes": {"x": {}}}, "routes.x needs"),
        ({**POLICY_YAML, "escalation_q": 2}, "escalation_q"),
        ({"tiers": [{"name": "a"}, {"name": "b", "models": ["m"]}]}, "models"),
        ("just a string", "mapping"),
    ],
)
def test_bad_policy_files_name_the_key(raw, message):
    with pytest.raises(PolicyError, match=message):
        parse_policy(raw)


def test_missing_policy_file(tmp_path: Path):
    with pytest.raises(PolicyError, match="TIERWISE_POLICY_FILE"):
        load_policy(tmp_path / "nope.yaml")


def test_policy_must_match_the_model_tiers(policy):
    policy.check_model_tiers(["fast", "balanced", "frontier"])
    with pytest.raises(PolicyError, match="cheapest first"):
        policy.check_model_tiers(["fast", "frontier"])


# Fail upward through the router: a classifier that raises, and one that misses the deadline.


def probabilities_for(texts):
    return np.tile(np.array(CONFIDENT_FAST), (len(texts), 1)), [5] * len(texts)


def raising_classifier(texts):
    raise RuntimeError("model crashed")


async def route_with(predict, deadline_ms=HANG_SECONDS * 1000, text="hello"):
    scorer = DirectScorer(predict)
    router = Router(parse_policy(POLICY_YAML), scorer, default_q=0.7, deadline_ms=deadline_ms)
    try:
        return await router.route([RoutingInput(text=text), RoutingInput(text="a@example.com wrote")])
    finally:
        await scorer.close()


def test_router_uses_the_classifier():
    routed = asyncio.run(route_with(probabilities_for))
    assert [d.tier for d in routed.decisions] == ["fast", "private"]
    assert routed.classifier_error is None


def test_router_fails_upward_when_the_classifier_raises():
    routed = asyncio.run(route_with(raising_classifier))
    assert [d.tier for d in routed.decisions] == ["frontier", "private"]
    assert all(CLASSIFIER_UNAVAILABLE in d.reasons for d in routed.decisions)
    assert "RuntimeError" in (routed.classifier_error or "")


def test_router_fails_upward_past_the_deadline():
    held = HeldCalls(probabilities_for)  # the classifier answers only once the routing is done:
    # an answer that waited for it could not exist
    try:
        routed = asyncio.run(route_with(held, deadline_ms=20))
    finally:
        held.release.set()
    assert routed.decisions[0].tier == "frontier"
    assert routed.decisions[0].reasons == (CLASSIFIER_UNAVAILABLE,)
    assert "deadline" in (routed.classifier_error or "")


def test_a_prompt_too_long_for_a_stronger_tier_goes_to_the_tier_that_can_hold_it():
    raw = {**POLICY_YAML, "routes": {}}
    raw["tiers"] = [
        {"name": "fast", "models": ["small"], "context_tokens": 128_000},
        {"name": "balanced", "models": ["mid"], "context_tokens": 1_000_000},
        {"name": "frontier", "models": ["big"], "context_tokens": 200_000},
    ]
    policy = parse_policy(raw)
    frontier = [0.0, 0.05, 0.95]
    assert decide(policy, frontier, tokens=150_000).tier == "frontier"
    held = decide(policy, frontier, tokens=500_000)
    assert held.tier == "balanced" and LONG_CONTEXT in held.reasons
    assert decide(policy, CONFIDENT_FAST, tokens=150_000).tier == "balanced"  # upward first
    assert decide(policy, frontier, tokens=5_000_000).tier == "frontier"  # nothing holds it: the top tier


def test_tier_offsets_pick_the_most_likely_tier_before_the_upward_rule(policy):
    probs = [0.5, 0.45, 0.05]
    request = RoutingInput(text="hello")
    assert policy.decide(request, probs, 20, default_q=0.0).tier == "fast"
    favoured = policy.decide(request, probs, 20, default_q=0.0, tier_offsets=[0.0, 0.3, 0.0])
    assert (favoured.tier, favoured.predicted_tier, favoured.escalated) == ("balanced", "balanced", False)
    assert favoured.probabilities["fast"] == pytest.approx(0.5)  # the calibrated scores are untouched
