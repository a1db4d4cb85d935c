"""Policy.decide with a per-segment guard: the segment's setting replaces q in rule 1, and every later
rule (long context, route pin and floor, min_tier, max_tier, the context limit, privacy) still wins."""

from dataclasses import replace

import pytest
from tierwise.core.policy import (
    CLASSIFIER_UNAVAILABLE,
    LONG_CONTEXT,
    LOW_CONFIDENCE,
    MAX_TIER,
    MIN_TIER,
    PRIVATE_DATA,
    ROUTE_OVERRIDE,
    RoutingInput,
    SegmentGuard,
)
from tierwise.core.policy_file import parse_policy
from tierwise.core.segment_guard import SEGMENT_GUARD, GuardSetting

from tests.core.test_policy import CONFIDENT_FAST, POLICY_YAML, UNSURE_FAST

# UNSURE_FAST: cumulative 0.5, 0.8, 1.0: balanced at q 0.7, fast at q <= 0.5

CHEAP = SegmentGuard("seg", GuardSetting(delta=-0.3), 0.01)  # q 0.7 -> 0.4: UNSURE_FAST goes fast
TOP_ONLY = SegmentGuard("seg", GuardSetting(top_only=True), 0.0)


@pytest.fixture
def policy():
    return parse_policy(POLICY_YAML)


def decide(policy, probabilities=UNSURE_FAST, tokens=20, q=0.7, text="hello", guard=None, **request):
    return policy.decide(RoutingInput(text=text, **request), probabilities, tokens, default_q=q, guard=guard)


def test_a_cheap_guard_lowers_the_tier_and_drops_low_confidence(policy):
    assert decide(policy).tier == "balanced" and decide(policy).reasons == (LOW_CONFIDENCE,)
    decision = decide(policy, guard=CHEAP)
    assert decision.tier == "fast" and decision.reasons == () and not decision.escalated
    assert decision.segment == "seg" and decision.segment_bound == 0.01
    assert decision.complexity_tier == "fast" and decision.fallbacks == ("small-b", "mid", "big-1", "big-2")


@pytest.mark.parametrize(
    ("request_fields", "tokens", "tier", "reason"),
    [
        ({"route": "legal"}, 20, "frontier", ROUTE_OVERRIDE),  # a route pin
        ({"route": "support"}, 20, "balanced", ROUTE_OVERRIDE),  # a route floor
        ({"min_tier": "balanced"}, 20, "balanced", MIN_TIER),
        ({}, 600, "balanced", LONG_CONTEXT),  # the long-context threshold
        ({"max_tier": "fast"}, 5000, "balanced", LONG_CONTEXT),  # fast cannot hold it, even under max_tier
    ],
)
def test_later_rules_win_over_a_cheap_guard(policy, request_fields, tokens, tier, reason):
    decision = decide(policy, guard=CHEAP, tokens=tokens, **request_fields)
    assert decision.tier == tier and reason in decision.reasons
    assert SEGMENT_GUARD not in decision.reasons and decision.segment == "seg"


def test_max_tier_caps_a_top_only_guard(policy):
    decision = decide(policy, CONFIDENT_FAST, guard=TOP_ONLY, max_tier="balanced")
    assert decision.tier == "balanced" and decision.reasons == (SEGMENT_GUARD, MAX_TIER)
    assert decision.fallbacks == ()  # nothing above the cap


def test_a_route_pin_below_the_top_wins_over_a_top_only_guard(policy):
    decision = decide(policy, CONFIDENT_FAST, guard=TOP_ONLY, route="chit")
    assert decision.tier == "fast" and ROUTE_OVERRIDE in decision.reasons


@pytest.mark.parametrize("text", ["write to jane.doe@example.com please", "my card is 4111 1111 1111 1111"])
@pytest.mark.parametrize("guard", [CHEAP, TOP_ONLY])
def test_privacy_wins_over_any_guard(policy, text, guard):
    decision = decide(policy, CONFIDENT_FAST, text=text, guard=guard)
    assert decision.tier == "private" and decision.model == "self-hosted" and PRIVATE_DATA in decision.reasons
    assert decision.private_data and decision.fallbacks == ()
    assert decision.complexity_tier == ("fast" if guard is CHEAP else "frontier")


def test_a_top_only_guard_sends_to_the_top_with_its_reason(policy):
    decision = decide(policy, CONFIDENT_FAST, guard=TOP_ONLY)
    assert decision.tier == "frontier" and decision.reasons == (SEGMENT_GUARD,)
    assert decision.escalated and decision.predicted_tier == "fast"
    assert decision.segment == "seg" and decision.segment_bound == 0.0
    # a request the model's q already sends to the top: the guard did not raise it, no reason
    assert decide(policy, [0.1, 0.1, 0.8], guard=TOP_ONLY).reasons == ()


def test_a_guard_that_raises_says_so(policy):
    assert decide(policy, CONFIDENT_FAST).tier == "fast"
    decision = decide(policy, CONFIDENT_FAST, guard=SegmentGuard("seg", GuardSetting(delta=0.25)))
    assert decision.tier == "balanced" and decision.reasons == (SEGMENT_GUARD,)  # q 0.95 > 0.9


def test_low_confidence_stays_while_the_lowered_tier_is_above_the_predicted_one(policy):
    base = decide(policy, q=0.9)
    assert base.tier == "frontier" and base.reasons == (LOW_CONFIDENCE,)
    lowered = decide(policy, q=0.9, guard=SegmentGuard("seg", GuardSetting(delta=-0.1)))  # q 0.8
    assert lowered.tier == "balanced" and lowered.reasons == (LOW_CONFIDENCE,) and lowered.escalated
    to_predicted = decide(policy, q=0.9, guard=SegmentGuard("seg", GuardSetting(delta=-0.45)))  # q 0.45
    assert to_predicted.tier == "fast" and to_predicted.reasons == () and not to_predicted.escalated


def test_the_guard_shifts_the_policy_q_when_the_policy_sets_one():
    policy = parse_policy({**POLICY_YAML, "escalation_q": 0.6})
    # q 0.6 + 0: UNSURE_FAST reaches 0.8 at balanced; shifting the model's 0.99 would go frontier
    assert decide(policy, q=0.99, guard=SegmentGuard("s", GuardSetting(delta=0.0))).tier == "balanced"
    assert decide(policy, q=0.99, guard=SegmentGuard("s", GuardSetting(delta=0.25))).tier == "frontier"


def test_the_guard_is_ignored_without_probabilities(policy):
    decision = policy.decide(RoutingInput(text="hi"), None, None, default_q=0.7, guard=CHEAP)
    assert decision.tier == "frontier" and decision.reasons == (CLASSIFIER_UNAVAILABLE,)
    assert decision.segment == "seg"


CASES = [
    {"probabilities": CONFIDENT_FAST},
    {"probabilities": UNSURE_FAST},
    {"probabilities": UNSURE_FAST, "q": 0.95},
    {"probabilities": [0.1, 0.2, 0.7]},
    {"probabilities": UNSURE_FAST, "route": "legal"},
    {"probabilities": UNSURE_FAST, "route": "support"},
    {"probabilities": CONFIDENT_FAST, "min_tier": "balanced"},
    {"probabilities": [0.1, 0.2, 0.7], "max_tier": "balanced"},
    {"probabilities": CONFIDENT_FAST, "tokens": 5000},
    {"probabilities": CONFIDENT_FAST, "text": "mail jane.doe@example.com"},
    {"probabilities": None, "tokens": None},
]


@pytest.mark.parametrize("case", CASES)
def test_no_guard_is_the_old_decision_exactly(policy, case):
    case = dict(case)
    probabilities, tokens, q = case.pop("probabilities"), case.pop("tokens", 20), case.pop("q", 0.7)
    request = RoutingInput(text=case.pop("text", "hello"), **case)
    old = policy.decide(request, probabilities, tokens, q)
    assert policy.decide(request, probabilities, tokens, q, None, None) == old
    assert old.segment is None and old.segment_bound is None
    # a guard with no setting (controller off, or only a segment name) changes nothing but the segment
    named = policy.decide(request, probabilities, tokens, q, guard=SegmentGuard("chat"))
    assert named == replace(old, segment="chat")


def test_a_guard_that_may_not_lower_only_raises(policy):
    """The estimator's score under overload and a canary's are not what the controller counted: the
    segment's setting may raise their tier, never lower it."""
    own = decide(policy)  # balanced by the model's q
    raise_only = replace(CHEAP, may_lower=False)
    assert decide(policy, guard=raise_only).tier == own.tier == "balanced"
    assert decide(policy, guard=replace(TOP_ONLY, may_lower=False)).tier == "frontier"
    assert SEGMENT_GUARD in decide(policy, guard=replace(TOP_ONLY, may_lower=False)).reasons
