"""One privacy rule on every path: the service, the CLI, the audit and the gateway's fallback all scan
every string a request carries (tierwise.core.request_text.request_strings), so a card number in a
tool call's arguments is as private as one in the user's message, and they all agree on each case."""

import json

import httpx
import pytest
from fastapi.testclient import TestClient
from tierwise.cli.main import main as cli_main
from tierwise.core.policy import PRIVATE_DATA
from tierwise.core.policy_file import DEFAULT_POLICY_FILE
from tierwise.core.privacy import detect_private_data
from tierwise.core.request_text import request_input, request_strings
from tierwise.gateway.client import TierwiseClient
from tierwise.ops.audit import AuditOptions, run_audit
from tierwise.service.app import create_app

from tools.privacy_cases import ORDINARY_REQUEST_SHAPES, REQUEST_SHAPE_CASES
from tools.tiny_model import make_settings

SHAPES = [(name, body, True) for name, body, _ in REQUEST_SHAPE_CASES] + [
    (name, body, False) for name, body in ORDINARY_REQUEST_SHAPES
]
SHAPE_IDS = [name for name, _, _ in SHAPES]


@pytest.fixture(scope="module")
def service(tiny_model_dir, tiny_classifier):
    app = create_app(
        make_settings(tiny_model_dir, micro_batching=False), classifier_factory=lambda _: tiny_classifier
    )
    with TestClient(app) as client:
        yield client


def gateway_fallback_tier(body: dict) -> str:
    """Where the gateway client sends a request when tierwise cannot be asked (connection refused)."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    client = TierwiseClient(
        "http://tierwise", policy_file=DEFAULT_POLICY_FILE, transport=httpx.MockTransport(refuse)
    )
    with client:
        return client.classify(
            messages=body["messages"],
            tools=body.get("tools"),
            functions=body.get("functions"),
            response_format=body.get("response_format"),
        ).tier


@pytest.mark.parametrize(
    ("name", "body", "kind"), REQUEST_SHAPE_CASES, ids=[c[0] for c in REQUEST_SHAPE_CASES]
)
def test_every_string_of_a_request_is_scanned(name, body, kind):
    read = request_input(body)
    assert kind in detect_private_data(read.privacy_text)
    assert read.privacy_text == request_strings(body)


def test_request_strings_reads_values_not_keys_nor_routing_fields():
    body = {
        "messages": [{"role": "user", "content": "hi", "tool_calls": [{"function": {"arguments": "{}"}}]}],
        "tools": [{"type": "function", "function": {"name": "lookup"}}],
        "route": "jane.doe@example.com",  # a route name never reaches a model
        "metadata": {"owner": "jane.doe@example.com"},
    }
    assert request_strings(body).split("\n") == ["user", "hi", "{}", "function", "lookup"]
    legacy = {
        "messages": [{"role": "user", "content": "hi"}],
        "functions": [{"name": "notify", "description": "mail jane"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "f", "schema": {"enum": ["x"]}}},
    }
    assert request_strings(legacy).split("\n") == [
        "user",
        "hi",
        "notify",
        "mail jane",
        "json_schema",
        "f",
        "x",
    ]


@pytest.mark.parametrize(("name", "body", "private"), SHAPES, ids=SHAPE_IDS)
def test_service_and_gateway_agree(service, name, body, private):
    answer = service.post("/classify", json=body)
    assert answer.status_code == 200, answer.text
    decided = answer.json()
    assert (PRIVATE_DATA in decided["reasons"]) is private
    assert (decided["tier"] == "private") is private
    assert (
        gateway_fallback_tier(body) == decided["tier"]
        if private
        else gateway_fallback_tier(body) != "private"
    )


def test_the_cli_routes_every_shape_like_the_service(tiny_model_dir, tmp_path):
    rows = tmp_path / "requests.jsonl"
    rows.write_text("".join(json.dumps(body) + "\n" for _, body, _ in SHAPES))
    out = tmp_path / "routed.jsonl"
    assert (
        cli_main(["classify", "--input", str(rows), "--output", str(out), "--model", str(tiny_model_dir)])
        == 0
    )
    routed = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["tier"] == "private" for r in routed] == [private for _, _, private in SHAPES]


def test_the_audit_counts_every_private_shape(tiny_model_dir, tmp_path):
    logs = tmp_path / "requests.jsonl"
    bodies = [body for _, body, _ in SHAPES]
    # An OpenAI Responses API log: the function call is an item of `input`, not a message.
    responses_call = {
        "input": [
            {"role": "user", "content": "Pay the invoice."},
            {"type": "function_call", "name": "pay", "arguments": '{"card": "4111 1111 1111 1111"}'},
        ]
    }
    logs.write_text("".join(json.dumps(b) + "\n" for b in [*bodies, responses_call]))
    summary, _ = run_audit(
        [logs], tiny_model_dir, DEFAULT_POLICY_FILE, AuditOptions(threads=1, show_progress=False)
    )
    private = sum(1 for _, _, p in SHAPES if p) + 1
    assert summary["requests"] == len(bodies) + 1
    assert summary["reasons"].get(PRIVATE_DATA) == private, summary["reasons"]
