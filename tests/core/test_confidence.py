"""`confidence` helps a gateway for every tier: P(the tier suffices) below the top tier, P(a cheaper
tier would not do) at the top, 0.0 with no classifier; a private request keeps its complexity tier."""

import pytest
from fastapi.testclient import TestClient
from tierwise.core.escalation import routing_confidence
from tierwise.core.policy import PRIVATE_DATA, RoutingInput
from tierwise.core.policy_file import parse_policy
from tierwise.service.app import create_app

from tests.core.test_policy import POLICY_YAML
from tools.tiny_model import FRONTIER_WORDS, make_settings

EMAIL = "write to jane.doe@example.com"


@pytest.fixture
def policy():
    return parse_policy(POLICY_YAML)


def decide(policy, probabilities, text="hello", q=0.7, **request):
    return policy.decide(RoutingInput(text=text, **request), probabilities, 20, default_q=q)


@pytest.mark.parametrize(
    ("probabilities", "tier", "confidence"),
    [
        ([0.9, 0.07, 0.03], "fast", 0.9),  # P(fast suffices)
        ([0.5, 0.3, 0.2], "balanced", 0.8),  # escalated: P(true tier <= balanced) = 0.5 + 0.3
        ([0.1, 0.2, 0.7], "frontier", 0.7),  # top: 1 - P(true tier <= balanced) = 1 - 0.3
        ([0.05, 0.6, 0.35], "frontier", 0.35),  # q = 0.7 is not reached at balanced (0.65): a weak top
    ],
)
def test_confidence_by_hand(policy, probabilities, tier, confidence):
    decision = decide(policy, probabilities)
    assert decision.tier == tier == decision.complexity_tier
    assert decision.confidence == pytest.approx(confidence)


def test_the_top_tier_is_no_longer_always_certain(policy):
    sure, unsure = decide(policy, [0.0, 0.05, 0.95]), decide(policy, [0.3, 0.3, 0.4], q=0.99)
    assert sure.tier == unsure.tier == "frontier"
    assert sure.confidence == pytest.approx(0.95) and unsure.confidence == pytest.approx(0.4)


def test_a_rule_raised_top_tier_says_how_needed_it_is(policy):
    pinned = decide(policy, [0.9, 0.07, 0.03], route="legal")  # the route pins frontier
    assert pinned.tier == "frontier" and pinned.confidence == pytest.approx(0.03)


def test_a_private_request_keeps_its_complexity_tier_and_its_confidence(policy):
    easy, hard = (
        decide(policy, [0.6, 0.3, 0.1], text=EMAIL, q=0.5),
        decide(policy, [0.1, 0.1, 0.8], text=EMAIL),
    )
    assert easy.tier == hard.tier == "private" and PRIVATE_DATA in easy.reasons
    assert (easy.complexity_tier, easy.confidence) == ("fast", pytest.approx(0.6))
    assert (hard.complexity_tier, hard.confidence) == ("frontier", pytest.approx(0.8))


def test_no_classifier_means_no_confidence(policy):
    decision = policy.unavailable_decision(RoutingInput(text="hello"))
    assert decision.tier == decision.complexity_tier == "frontier" and decision.confidence == 0.0
    assert routing_confidence(None, 2) == 0.0


def test_the_api_answers_complexity_tier_and_documents_confidence(tiny_model_dir, tiny_classifier):
    app = create_app(
        make_settings(tiny_model_dir, micro_batching=False), classifier_factory=lambda _: tiny_classifier
    )
    with TestClient(app) as client:
        hard = client.post("/classify", json={"text": " ".join(FRONTIER_WORDS)}).json()
        private = client.post("/classify", json={"text": f"{' '.join(FRONTIER_WORDS)} {EMAIL}"}).json()
        schema = client.get("/openapi.json").json()["components"]["schemas"]["ClassifyResponse"]
    assert hard["tier"] == hard["complexity_tier"] == "frontier"
    assert hard["confidence"] == pytest.approx(hard["probabilities"]["frontier"], abs=1e-6)
    assert hard["confidence"] < 1.0
    assert private["tier"] == "private" and private["complexity_tier"] == "frontier"
    assert "P(it suffices)" in schema["properties"]["confidence"]["description"]
    assert "private" in schema["properties"]["complexity_tier"]["description"]
