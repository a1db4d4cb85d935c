"""Bad input gets a 422 that says what is allowed, taken from the schema itself."""

import pytest
from fastapi.testclient import TestClient
from tierwise.service.app import create_app
from tierwise.service.schemas import ClassifyRequest

from tools.tiny_model import make_settings

ROLES = ["system", "developer", "user", "assistant", "tool", "function"]


@pytest.fixture(scope="module")
def client(tiny_model_dir, tiny_classifier):
    app = create_app(
        make_settings(tiny_model_dir, micro_batching=False), classifier_factory=lambda _: tiny_classifier
    )
    with TestClient(app) as test_client:
        yield test_client


def error_of(response, status=422):
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_an_unknown_role_is_refused_with_the_allowed_roles(client):
    error = error_of(client.post("/classify", json={"messages": [{"role": "wizard", "content": "hi"}]}))
    assert error["field"] == "messages.0.role"
    assert "'wizard' is not allowed" in error["message"]
    assert error["message"].endswith("allowed: " + ", ".join(ROLES))


@pytest.mark.parametrize("role", ROLES)
def test_every_openai_role_is_accepted(client, role):
    messages = [{"role": role, "content": "context"}, {"role": "user", "content": "hello hello"}]
    assert client.post("/classify", json={"messages": messages}).status_code == 200


def test_an_unknown_field_lists_every_accepted_field(client):
    error = error_of(client.post("/classify", json={"text": "hi", "colour": "blue"}))
    listed = error["message"].removeprefix("colour: unknown field; allowed: ").split(", ")
    assert listed == [
        "text",
        "messages",
        "tools",
        "functions",
        "response_format",
        "min_tier",
        "max_tier",
        "route",
        "metadata",
    ]
    assert set(listed) == set(ClassifyRequest.model_fields)  # each listed field is accepted


def test_unknown_fields_in_a_batch_and_its_items(client):
    batch = error_of(client.post("/classify/batch", json={"items": [{"text": "hi"}], "x": 1}))
    assert batch["message"] == "x: unknown field; allowed: items"
    item = error_of(client.post("/classify/batch", json={"items": [{"text": "hi", "y": 1}]}))
    assert item["field"] == "items.0.y" and "allowed: text, messages, tools," in item["message"]
