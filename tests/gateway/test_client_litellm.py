"""The Python client (sync, async, fail upward) and the LiteLLM integration on a real litellm.Router."""

import asyncio
import os

import httpx
import pytest
from fastapi.testclient import TestClient
from tierwise.gateway.client import AsyncTierwiseClient, TierwiseClient, TierwiseRequestError
from tierwise.service.app import create_app

from tests.helpers.tiny_model import make_settings

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network: LiteLLM's bundled price map
litellm = pytest.importorskip("litellm")
litellm.telemetry = False
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydantic notes about LiteLLM's own types

from tierwise.gateway.litellm_router import (  # noqa: E402  (after the environment is set for LiteLLM)
    NoDeploymentError,
    TierwiseLiteLLMRouter,
    TierwiseProxyHook,
    model_chain,
)

PROMPTS = {"fast": "hello hello", "balanced": "write an email", "frontier": "prove the theorem"}
ANSWERS = {  # the default policy's models (serving/tierwise/core/policy.yaml), tier by tier
    "gpt-4o-mini": "answer from fast",
    "claude-3-5-haiku": "answer from fast 2",
    "gemini-2.0-flash": "answer from fast 3",
    "gpt-4.1": "answer from balanced",
    "claude-sonnet-4": "answer from balanced 2",
    "o3": "answer from frontier",
    "claude-opus-4-1": "answer from frontier 2",
}


@pytest.fixture(scope="module")
def app(tiny_model_dir, tiny_classifier):
    settings = make_settings(tiny_model_dir, micro_batching=False)  # callable from any event loop
    application = create_app(settings, classifier_factory=lambda _: tiny_classifier)
    with TestClient(application) as test_client:
        yield application, test_client


def async_client(app, **kwargs):
    return AsyncTierwiseClient("http://tierwise", transport=httpx.ASGITransport(app=app[0]), **kwargs)


def sync_client(app, **kwargs):
    client = TierwiseClient("http://testserver", **kwargs)
    client._http = app[1]  # the TestClient is an httpx.Client bound to the app
    return client


def litellm_router(failing=()):
    model_list = [
        {
            "model_name": name,
            "litellm_params": {
                "model": f"openai/{name}",
                "api_key": "not-used",
                "mock_response": "litellm.InternalServerError" if name in failing else answer,
            },
        }
        for name, answer in ANSWERS.items()
    ]
    return litellm.Router(model_list=model_list, num_retries=0)


def content(response):
    return response.choices[0].message.content


# The client


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


# LiteLLM


@pytest.mark.parametrize("tier", ["fast", "balanced", "frontier"])
def test_litellm_route_is_chosen_per_tier(app, tier):
    async def run():
        router = TierwiseLiteLLMRouter(litellm_router(), client=async_client(app))
        response = await router.acompletion(messages=[{"role": "user", "content": PROMPTS[tier]}])
        return router, response

    router, response = asyncio.run(run())
    expected_model = {"fast": "gpt-4o-mini", "balanced": "gpt-4.1", "frontier": "o3"}[tier]
    assert content(response) == ANSWERS[expected_model]
    assert router.last_routing.tier == tier


def test_litellm_falls_back_in_order(app):
    async def run(failing):
        router = TierwiseLiteLLMRouter(litellm_router(failing=failing), client=async_client(app))
        return await router.acompletion(messages=[{"role": "user", "content": PROMPTS["balanced"]}])

    # balanced's first model failed: its next model; both failed: the next tier's first model
    assert content(asyncio.run(run({"gpt-4.1"}))) == ANSWERS["claude-sonnet-4"]
    assert content(asyncio.run(run({"gpt-4.1", "claude-sonnet-4"}))) == ANSWERS["o3"]


def test_litellm_sync_and_passthrough(app):
    router = TierwiseLiteLLMRouter(litellm_router(), sync_client=sync_client(app))
    assert (
        content(router.completion(messages=[{"role": "user", "content": PROMPTS["fast"]}]))
        == ANSWERS["gpt-4o-mini"]
    )
    direct = router.completion(model="claude-sonnet-4", messages=[{"role": "user", "content": "hi"}])
    assert content(direct) == ANSWERS["claude-sonnet-4"]


def test_litellm_fails_upward_when_tierwise_is_down():
    def refuse(request):
        raise httpx.ConnectError("connection refused")

    async def run():
        client = AsyncTierwiseClient(transport=httpx.MockTransport(refuse))
        router = TierwiseLiteLLMRouter(litellm_router(), client=client)
        return router, await router.acompletion(messages=[{"role": "user", "content": PROMPTS["fast"]}])

    router, response = asyncio.run(run())
    assert content(response) == ANSWERS["o3"] and router.last_routing.failed_upward


def test_proxy_hook_rewrites_model_and_fallbacks(app):
    async def run():
        router = litellm_router()
        hook = TierwiseProxyHook(async_client(app), router=router)
        data = {"model": "tierwise", "messages": [{"role": "user", "content": PROMPTS["balanced"]}]}
        data = await hook.async_pre_call_hook(None, None, data, "acompletion")
        untouched = await hook.async_pre_call_hook(
            None, None, {"model": "gpt-4.1", "messages": []}, "acompletion"
        )
        return data, untouched, await router.acompletion(**data)

    data, untouched, response = asyncio.run(run())
    assert data["model"] == "gpt-4.1" and data["fallbacks"] == ["claude-sonnet-4", "o3", "claude-opus-4-1"]
    assert data["metadata"]["tierwise"]["tier"] == "balanced"
    assert untouched == {"model": "gpt-4.1", "messages": []}
    assert content(response) == ANSWERS["gpt-4.1"]


def test_model_chain_maps_and_explains_missing_groups():
    from tierwise.gateway.client import Routing

    routing = Routing(
        tier="balanced", model="gpt-4.1", fallbacks=("claude-sonnet-4", "o3", "claude-opus-4-1")
    )
    assert model_chain(routing, {"my-4.1", "o3"}, {"gpt-4.1": "my-4.1"}) == ["my-4.1", "o3"]
    with pytest.raises(NoDeploymentError, match="model_groups"):
        model_chain(routing, {"other"}, {})


# The privacy rule applied locally before any fallback


def refused_transport():
    def refuse(request):
        raise httpx.ConnectError("connection refused")

    return httpx.MockTransport(refuse)


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


def test_hook_keeps_private_requests_inside_the_private_tier():
    from tierwise.gateway.client import PrivateDataUnroutableError

    async def run(router):
        hook = TierwiseProxyHook(AsyncTierwiseClient(transport=refused_transport()), router=router)
        data = {"model": "tierwise", "messages": [{"role": "user", "content": "card 5555 5555 5555 4444"}]}
        return await hook.async_pre_call_hook(None, None, data, "acompletion")

    with pytest.raises(PrivateDataUnroutableError, match="no model group"):
        asyncio.run(run(litellm_router()))  # the router has no group for the private tier
    with_private = litellm_router()
    with_private.model_list.append({"model_name": "llama-3.3-70b-selfhosted", "litellm_params": {}})
    data = asyncio.run(run(with_private))
    assert data["model"] == "llama-3.3-70b-selfhosted" and data["fallbacks"] == []
    assert data["context_window_fallbacks"] == [] and data["content_policy_fallbacks"] == []
