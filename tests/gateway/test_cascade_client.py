"""The client's `complete`: classify, call the routed model through the caller's own `call`, check and
retry one tier up, feedback to the service's decision log; private requests are never retried."""

import asyncio

import httpx
import pytest
from fastapi.testclient import TestClient
from tierwise.core.policy_file import DEFAULT_POLICY_FILE, load_policy
from tierwise.evidence.decision_log import DecisionStore
from tierwise.gateway.cascade import RetryPlanner
from tierwise.gateway.cascade_client import cascade_from_policy
from tierwise.gateway.cascade_config import CascadeConfig
from tierwise.gateway.cascade_runner import Cascade
from tierwise.gateway.client import AsyncTierwiseClient, TierwiseClient
from tierwise.service.app import create_app

from tests.helpers.gateway import PROMPTS, refused_transport, sync_client
from tools.tiny_model import make_settings

POLICY = load_policy(DEFAULT_POLICY_FILE)
JSON = {"type": "json_object"}


@pytest.fixture()
def served(tiny_model_dir, tiny_classifier, tmp_path):
    db_url = f"sqlite:///{tmp_path / 'decisions.sqlite'}"
    settings = make_settings(tiny_model_dir, record_decisions=True, decision_db=db_url, micro_batching=False)
    app = create_app(settings, classifier_factory=lambda _: tiny_classifier)
    with TestClient(app) as test_client:
        yield (app, test_client), db_url


def answer(content):
    return {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ]
    }


def scripted(calls):
    """A model call: the fast tier's first model answers broken JSON, every other model good JSON."""

    def call(model, body):
        calls.append((model, sorted(body)))
        return answer('{"a": 1' if model == POLICY.tiers[0].models[0] else '{"a": 1}')

    return call


def rows(app, db_url):
    app[0].state.decision_recorder.wait_idle(5.0)
    return [r.feedback.evidence for r in DecisionStore(db_url).labeled_decisions() if r.feedback]


def test_complete_retries_one_tier_up_and_reports(served):
    app, db_url = served
    client, calls = sync_client(app), []
    cascade = Cascade(RetryPlanner(POLICY, CascadeConfig()), client)
    messages = [{"role": "user", "content": PROMPTS["fast"]}]
    response, routing, outcome = client.complete(
        scripted(calls), cascade, messages=messages, response_format=JSON
    )
    cascade.drain_sync()
    assert routing.tier == "fast" and response == answer('{"a": 1}')
    assert [model for model, _ in calls] == ["gpt-4o-mini", "gpt-4.1"]
    assert calls[0][1] == ["messages", "response_format"]  # the body, without tierwise's own arguments
    assert outcome.header() == "fast:invalid_json balanced:ok; stop=passed"
    [evidence] = rows(app, db_url)
    assert evidence["tier"] == "fast" and evidence["reason"] == "invalid_json"


def test_complete_without_a_cascade_and_for_private_requests(served):
    app, db_url = served
    client, calls = sync_client(app), []
    messages = [{"role": "user", "content": PROMPTS["fast"]}]
    response, _, outcome = client.complete(scripted(calls), None, messages=messages, response_format=JSON)
    assert outcome is None and response == answer('{"a": 1') and len(calls) == 1

    async def run():
        async_client = AsyncTierwiseClient(
            "http://tierwise", transport=httpx.ASGITransport(app=app[0]), timeout=5
        )
        cascade = Cascade(RetryPlanner(POLICY, CascadeConfig(max_retries=3)), async_client)
        private_calls = []

        async def call(model, body):
            private_calls.append(model)
            return answer("I'm sorry, but I can't help with that.")

        private = [{"role": "user", "content": "hello hello jane.doe@example.com"}]
        result = await async_client.complete(call, cascade, messages=private)
        await cascade.drain()
        return result, private_calls

    (_, routing, outcome), private_calls = asyncio.run(run())
    assert routing.tier == "private" and private_calls == ["llama-3.3-70b-selfhosted"]
    assert outcome.stop == "private" and not outcome.passed


def test_cascade_from_policy(tmp_path):
    assert cascade_from_policy(None) is None  # the packaged policy has no cascade section
    policy = tmp_path / "policy.yaml"
    policy.write_text(DEFAULT_POLICY_FILE.read_text() + "\ncascade:\n  max_retries: 2\n")
    cascade = cascade_from_policy(policy)
    assert cascade is not None and cascade.config.max_retries == 2
    assert cascade.stats.window == 500  # the one default of judge.window
    policy.write_text(
        DEFAULT_POLICY_FILE.read_text() + "\ncascade:\n  judge: {model: o3, failure_rate: 0.2, window: 7}\n"
    )
    assert cascade_from_policy(policy).stats.window == 7


NOTIFY = {
    "name": "notify",
    "description": "e-mail jane.doe@example.com",
    "parameters": {"type": "object", "properties": {}},
}
CARD_SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "form",
        "schema": {"type": "object", "properties": {"card": {"const": "5555 5555 5555 4444"}}},
    },
}


@pytest.mark.parametrize(
    "extra",
    [{"functions": [NOTIFY]}, {"response_format": CARD_SCHEMA}],
    ids=["legacy functions", "response_format schema"],
)
def test_complete_keeps_personal_data_outside_the_messages_private(served, extra):
    """The whole body reaches the model, so the privacy rule reads all of it: with the service up (it
    scans what `complete` sends it) and down (the client's own rule)."""
    app, _ = served
    messages = [{"role": "user", "content": PROMPTS["fast"]}]
    down = TierwiseClient("http://tierwise", transport=refused_transport(), policy_file=DEFAULT_POLICY_FILE)
    for client in (sync_client(app), down):
        calls = []
        _, routing, _ = client.complete(scripted(calls), None, messages=messages, **extra)
        assert routing.tier == "private" and [m for m, _ in calls] == ["llama-3.3-70b-selfhosted"]
    ordinary = {"functions": [{**NOTIFY, "description": "notify the team"}]}
    calls = []
    _, routing, _ = sync_client(app).complete(scripted(calls), None, messages=messages, **ordinary)
    assert routing.tier == "fast" and calls[0][1] == ["functions", "messages"]
