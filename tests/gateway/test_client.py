"""The Python client: sync and async classification and feedback, failing upward on errors and
slowness, and privacy first when tierwise cannot be asked (the private tier, or fail closed)."""

import asyncio

import httpx
import pytest
from tierwise.gateway.client import AsyncTierwiseClient, TierwiseClient, TierwiseRequestError

from tests.helpers.gateway import PROMPTS, async_client, refused_transport, sync_client


def test_sync_client_classifies_and_sends_feedback(app):
    client = sync_client(app)
    routing = client.classify(text=PROMPTS["balanced"], request_id="client-1")
    assert routing.tier == "balanced" and routing.model == "gpt-4.1"
    assert routing.models == ("gpt-4.1", "claude-sonnet-4", "o3", "claude-opus-4-1")
    assert routing.request_id == "client-1" and not routing.failed_upward
    with pytest.raises(TierwiseRequestError, match="403 feedback_disabled"):
        client.feedback("client-1", needed_tier="balanced")
    with pytest.raises(ValueError, match="exactly one"):
        client.feedback("client-1")


def test_async_client_classifies_messages(app):
    async def run():
        async with async_client(app) as client:
            return await client.classify(messages=[{"role": "user", "content": PROMPTS["frontier"]}])

    routing = asyncio.run(run())
    assert routing.tier == "frontier" and routing.model == "o3" and routing.fallbacks == ("claude-opus-4-1",)


def test_client_fails_upward_on_errors_and_slowness():
    def refuse(request):
        raise httpx.ConnectError("connection refused")

    def server_error(request):
        return httpx.Response(503, json={"error": {"type": "internal_error", "message": "boom"}})

    def unprocessable(request):
        return httpx.Response(
            422, json={"error": {"type": "invalid_request", "message": "text: empty", "field": "text"}}
        )

    for handler, words in (
        (refuse, "ConnectError"),
        (server_error, "503 internal_error"),
        (unprocessable, "422"),
    ):
        client = TierwiseClient(transport=httpx.MockTransport(handler))
        routing = client.classify(text="x")
        assert routing.failed_upward and routing.tier == "frontier" and words in routing.error
        assert routing.models == ("o3", "claude-opus-4-1")
    strict = TierwiseClient(transport=httpx.MockTransport(unprocessable), strict=True)
    with pytest.raises(TierwiseRequestError, match="text: empty"):
        strict.classify(text="x")

    async def slow(request):
        await asyncio.sleep(1.0)
        return httpx.Response(200, json={})

    async def run():
        client = AsyncTierwiseClient(
            timeout=0.05, transport=httpx.MockTransport(slow), upward_tier="top", upward_models=["m1"]
        )
        started = asyncio.get_running_loop().time()
        routing = await client.classify(text="x")
        return routing, asyncio.get_running_loop().time() - started

    routing, seconds = asyncio.run(run())
    assert routing.failed_upward and routing.model == "m1" and "within 0.05 s" in routing.error
    assert seconds < 0.5


def test_client_sends_private_data_to_the_private_tier_when_tierwise_fails():
    client = TierwiseClient(transport=refused_transport())
    routing = client.classify(text="charge 4111-1111-1111-1111 please")
    assert routing.failed_upward and routing.tier == "private"
    assert routing.models == ("llama-3.3-70b-selfhosted",) and routing.reasons == ("private_data",)
    parts = [{"role": "user", "content": [{"type": "text", "text": "mail john[at]example[dot]com"}]}]
    assert client.classify(messages=parts).tier == "private"
    assert client.classify(text="hello").tier == "frontier"  # no personal data: the top tier

    async def run():
        async with AsyncTierwiseClient(transport=refused_transport()) as async_client:
            return await async_client.classify(text="key sk-proj-abcdefghijklmnopqrstuvwx1234")

    assert asyncio.run(run()).tier == "private"


def test_client_fails_closed_without_a_private_tier(tmp_path):
    from tierwise.gateway.client import PrivateDataUnroutableError

    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "tiers:\n  - {name: cheap, models: [m1]}\n  - {name: top, models: [m2]}\n", encoding="utf-8"
    )
    client = TierwiseClient(transport=refused_transport(), policy_file=policy)
    assert client.classify(text="hello").model == "m2"
    with pytest.raises(PrivateDataUnroutableError, match="no private tier is configured"):
        client.classify(text="my IBAN is DE89 3704 0044 0532 0130 00")
