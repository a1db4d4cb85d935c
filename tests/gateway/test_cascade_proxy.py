"""The cascade in the real LiteLLM proxy (`litellm --config`, litellm[proxy] 1.106.2) with the config and
the `cascade:` block documented in serving/tierwise/gateway/LITELLM.md, in front of the scripted
upstream of tools/cascade_fake.py and a tierwise service with its decision log (tools/cascade_stack.py):
a failed check is retried one tier up and said in the header, feedback reaches the decision log,
streams behave as documented, and a private request never reaches a public model. Calls are counted
at the upstream; nothing depends on wall-clock timing."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import yaml
from tierwise.gateway.cascade_config import parse_cascade

from tools.cascade_fake import CascadeUpstream, Faults, stream_response
from tools.cascade_stack import (
    MASTER_KEY,
    Stack,
    StackError,
    cascade_feedback,
    cascade_stack,
    documented_cascade,
)

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

FAST = "hello hello thanks"
JSON_FORMAT = {"type": "json_object"}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    try:
        with cascade_stack(CascadeUpstream()) as running:
            yield running
    except StackError as err:
        if "No module named" in str(err) or "no `litellm` command" in str(err):
            pytest.skip(f"the LiteLLM proxy cannot start here: {str(err)[:300]}")
        raise


@pytest.fixture()
def proxy(stack: Stack) -> Iterator[Stack]:
    stack.upstream.faults = {"gpt-4o-mini": Faults(malformed=1.0)}
    stack.upstream.take()
    yield stack
    stack.upstream.faults = {}


def models(stack: Stack) -> list[str]:
    return [model for model, _ in stack.upstream.take()]


def test_the_documented_cascade_block_is_valid():
    config = parse_cascade(documented_cascade()["cascade"], "LITELLM.md")
    assert config is not None and config.max_retries >= 1 and config.streams == "buffer"


def has_fast_invalid_json(rows: list[dict]) -> bool:
    """The feedback of this test's retry has been written (the hook sends it in the background)."""
    return any(r["evidence"]["tier"] == "fast" and r["evidence"]["reason"] == "invalid_json" for r in rows)


def test_a_malformed_json_answer_is_retried_one_tier_up(proxy):
    response = proxy.chat(
        {"model": "tierwise", "messages": [{"role": "user", "content": FAST}], "response_format": JSON_FORMAT}
    )
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "gpt-4.1"
    assert json.loads(response.json()["choices"][0]["message"]["content"])["ok"] is True
    assert response.headers["x-tierwise-cascade"] == "fast:invalid_json balanced:ok; stop=passed"
    assert float(response.headers["x-tierwise-cascade-added-ms"]) > 0
    assert response.headers["x-litellm-model-group"] == "gpt-4.1"
    assert models(proxy) == ["gpt-4o-mini", "gpt-4.1"]
    rows = [
        row
        for row in cascade_feedback(proxy.decision_db, until=has_fast_invalid_json)
        if row["evidence"]["tier"] == "fast"
    ]
    assert rows and rows[-1]["evidence"]["reason"] == "invalid_json" and rows[-1]["low_tier"] == "balanced"


def test_a_passing_answer_and_an_opted_out_request_are_not_retried(proxy):
    plain = proxy.chat({"model": "tierwise", "messages": [{"role": "user", "content": FAST}]})
    assert plain.headers["x-tierwise-cascade"] == "fast:ok; stop=passed"
    opted = proxy.chat(
        {
            "model": "tierwise",
            "messages": [{"role": "user", "content": FAST}],
            "response_format": JSON_FORMAT,
            "metadata": {"tierwise_cascade": False},
        }
    )
    assert opted.status_code == 200 and "x-tierwise-cascade" not in opted.headers
    assert models(proxy) == ["gpt-4o-mini", "gpt-4o-mini"]


def test_a_private_request_is_never_retried_to_a_public_model(proxy):
    proxy.upstream.faults["llama-3.3-70b"] = Faults(malformed=1.0)
    body = {
        "model": "tierwise",
        "messages": [{"role": "user", "content": f"{FAST} jane.doe@example.com"}],
        "response_format": JSON_FORMAT,
    }
    response = proxy.chat(body)
    assert response.status_code == 200 and response.json()["model"] == "llama-3.3-70b-selfhosted"
    assert response.headers["x-tierwise-cascade"] == "private:invalid_json; stop=private"
    assert models(proxy) == ["llama-3.3-70b"]


def stream(stack: Stack, body: dict) -> tuple[httpx.Headers, list[str]]:
    with httpx.stream(
        "POST",
        f"{stack.proxy_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        json={**body, "stream": True},
        timeout=60,
    ) as response:
        assert response.status_code == 200
        return response.headers, list(response.iter_lines())


def test_a_json_stream_is_buffered_checked_and_retried(proxy):
    headers, lines = stream(
        proxy,
        {
            "model": "tierwise",
            "messages": [{"role": "user", "content": FAST}],
            "response_format": JSON_FORMAT,
        },
    )
    assert headers["x-tierwise-cascade"] == "stream=buffered"  # sent before the answer
    answer = stream_response(lines)
    assert json.loads(answer["choices"][0]["message"]["content"])["ok"] is True
    assert {json.loads(line[6:])["model"] for line in lines if line.startswith("data: {")} == {"gpt-4.1"}
    assert models(proxy) == ["gpt-4o-mini", "gpt-4.1"]


def test_a_plain_text_stream_passes_unchecked(proxy):
    proxy.upstream.faults = {"gpt-4o-mini": Faults(truncate=1.0)}
    headers, lines = stream(proxy, {"model": "tierwise", "messages": [{"role": "user", "content": FAST}]})
    assert headers["x-tierwise-cascade"] == "stream=unchecked"
    assert stream_response(lines)["choices"][0]["finish_reason"] == "length"
    assert models(proxy) == ["gpt-4o-mini"]


def test_the_stack_reads_the_documented_config(stack):
    assert "cascade" in yaml.safe_load(stack.policy_file.read_text())
