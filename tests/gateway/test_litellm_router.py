"""The LiteLLM integration on a real litellm.Router with mocked completions: routes per tier,
fallbacks in order, failing upward, the proxy hook, and private requests kept private.

All slow: importing LiteLLM alone takes seconds, so the fast loop (-m "not slow") skips this module
without importing it (tests/conftest.py)."""

import asyncio
import os

import httpx
import pytest
from tierwise.gateway.client import AsyncTierwiseClient

from tests.helpers.gateway import PROMPTS, async_client, refused_transport, sync_client

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network: LiteLLM's bundled price map
litellm = pytest.importorskip("litellm")
litellm.telemetry = False
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::UserWarning"),  # pydantic notes about LiteLLM's own types
]

from tierwise.gateway.litellm_chain import NoDeploymentError, model_chain  # noqa: E402
from tierwise.gateway.litellm_router import (  # noqa: E402  (after the environment is set for LiteLLM)
    TierwiseLiteLLMRouter,
    TierwiseProxyHook,
)

ANSWERS = {  # the default policy's models (serving/tierwise/core/policy.yaml), tier by tier
    "gpt-4o-mini": "answer from fast",
    "claude-3-5-haiku": "answer from fast 2",
    "gemini-2.0-flash": "answer from fast 3",
    "gpt-4.1": "answer from balanced",
    "claude-sonnet-4": "answer from balanced 2",
    "o3": "answer from frontier",
    "claude-opus-4-1": "answer from frontier 2",
}


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


NOTIFY = {"name": "notify", "description": "e-mail jane.doe@example.com", "parameters": {"type": "object"}}
MAIL_TOOL = {"type": "function", "name": "send", "description": "sends as jane.doe@example.com"}


@pytest.mark.parametrize("tierwise_up", [True, False], ids=["service up", "service down"])
def test_personal_data_in_functions_or_beside_a_prompt_keeps_the_request_private(app, tierwise_up):
    """Everything the proxy sends on reaches the model: legacy `functions` beside messages, and `tools`
    beside a prompt string (a Responses API call) are scanned as the messages are."""

    async def run(data):
        client = async_client(app) if tierwise_up else AsyncTierwiseClient(transport=refused_transport())
        router = litellm_router()
        router.model_list.append({"model_name": "llama-3.3-70b-selfhosted", "litellm_params": {}})
        hook = TierwiseProxyHook(client, router=router)
        return await hook.async_pre_call_hook(None, None, data, "acompletion")

    messages = [{"role": "user", "content": PROMPTS["fast"]}]
    for data in (
        {"model": "tierwise", "messages": messages, "functions": [NOTIFY]},
        {"model": "tierwise", "input": PROMPTS["fast"], "tools": [MAIL_TOOL]},
    ):
        routed = asyncio.run(run(dict(data)))
        assert routed["model"] == "llama-3.3-70b-selfhosted" and routed["fallbacks"] == []
    sdk = TierwiseLiteLLMRouter(litellm_router(), sync_client=sync_client(app))
    if tierwise_up:  # the SDK wrapper has no private group here: refused, never sent
        from tierwise.gateway.client import PrivateDataUnroutableError

        with pytest.raises(PrivateDataUnroutableError):
            sdk.completion(messages=messages, functions=[NOTIFY])


def test_proxy_hook_sends_the_keys_team_as_the_route_and_keeps_it_for_the_cascade(app):
    sent = []

    class Recording(httpx.AsyncBaseTransport):
        def __init__(self, inner):
            self.inner = inner

        async def handle_async_request(self, request):
            sent.append(request.content)
            return await self.inner.handle_async_request(request)

    async def run(metadata, key):
        client = AsyncTierwiseClient("http://tierwise", transport=Recording(httpx.ASGITransport(app=app[0])))
        hook = TierwiseProxyHook(client, router=litellm_router())
        data = {"model": "tierwise", "messages": [{"role": "user", "content": PROMPTS["fast"]}]}
        if metadata is not None:
            data["metadata"] = metadata
        return await hook.async_pre_call_hook(key, None, data, "acompletion")

    import json
    from types import SimpleNamespace

    data = asyncio.run(run(None, SimpleNamespace(team_alias="support-bot", key_alias="k")))
    assert json.loads(sent[-1])["route"] == "team:support-bot"
    assert data["metadata"]["tierwise_route"] == "team:support-bot"
    data = asyncio.run(run({"tierwise_route": "legal-review"}, SimpleNamespace(team_alias="support-bot")))
    assert json.loads(sent[-1])["route"] == "legal-review" and data["model"] == "o3"  # the policy's pin
