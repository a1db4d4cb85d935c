"""Score, then decide (tierwise.core.decide): the one function the offline paths share, and the one
wire form of a decision that the response, `tierwise classify`, the log line and the trace use."""

import asyncio

from tierwise.core.decide import decision_wire_form, score_then_decide
from tierwise.core.policy import RoutingInput
from tierwise.core.policy_file import DEFAULT_POLICY_FILE, load_policy
from tierwise.service.batcher import DirectScorer
from tierwise.service.routing import Router
from tierwise.service.schemas import ClassifyResponse
from tierwise.service.settings import Settings

TEXTS = ["hello there", "write an email to the team", "prove the theorem and design the system"]


def requests() -> list[RoutingInput]:
    return [RoutingInput(text=t) for t in TEXTS] + [RoutingInput(text="hi", route="legal-review")]


def test_offline_decisions_are_the_services(tiny_classifier, tiny_model_dir):
    policy = load_policy(DEFAULT_POLICY_FILE)
    offline = score_then_decide(tiny_classifier, policy, requests())
    settings = Settings(model_dir=tiny_model_dir, estimator=False)
    router = Router.for_classifier(
        policy, DirectScorer(tiny_classifier.predict_proba), tiny_classifier, settings
    )
    served = asyncio.run(router.route(requests())).decisions
    assert [d.tier for d in offline] == [d.tier for d in served]
    assert [d.probabilities for d in offline] == [d.probabilities for d in served]
    assert offline[-1].tier == "frontier" and "route_override" in offline[-1].reasons
    assert [d.predicted_tier for d in offline[:3]] == ["fast", "balanced", "frontier"]  # the tiny model


def test_the_wire_form_is_the_response_less_its_id(tiny_classifier):
    [decision] = score_then_decide(tiny_classifier, load_policy(DEFAULT_POLICY_FILE), requests()[:1])
    wire = decision_wire_form(decision, tiny_classifier.version)
    response_fields = set(ClassifyResponse.model_fields) - {"request_id"}
    assert set(wire) == response_fields | {"token_count"}  # `tierwise classify` rows also carry tokens
    response = ClassifyResponse(**wire, request_id="r1").model_dump()
    assert {k: response[k] for k in response_fields} == {k: wire[k] for k in response_fields}
    assert wire["model_version"] == tiny_classifier.version and wire["token_count"] == decision.token_count
