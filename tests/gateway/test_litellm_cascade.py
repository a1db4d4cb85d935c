"""The cascade inside a real `litellm.Router` (SDK wrapper and proxy hook, in-process) in front of the
scripted fake upstream of tools/cascade_fake.py, with tierwise in-process and its decision log on:
a failed check is retried one tier up through the router, the header and metadata say so, feedback
rows reach the decision log, private requests stay private, and streams behave as documented.
Calls are counted at the upstream; no wall-clock timing.

All slow: importing LiteLLM alone takes seconds (tests/conftest.py skips the module in the fast loop)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from tierwise.core.policy_file import DEFAULT_POLICY_FILE, load_policy
from tierwise.evidence.decision_log import DecisionStore
from tierwise.gateway.cascade import RetryPlanner
from tierwise.gateway.cascade_config import CascadeConfig
from tierwise.gateway.cascade_litellm import LiteLLMCascade
from tierwise.gateway.cascade_runner import Cascade
from tierwise.gateway.client import AsyncTierwiseClient
from tierwise.service.app import create_app

from tools.cascade_fake import AppServer, CascadeUpstream, Faults, create_cascade_app
from tools.tiny_model import make_settings

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network: LiteLLM's bundled price map
litellm = pytest.importorskip("litellm")
litellm.telemetry = False
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

from tierwise.gateway.litellm_router import TierwiseLiteLLMRouter, TierwiseProxyHook  # noqa: E402

POLICY = load_policy(DEFAULT_POLICY_FILE)
PRIVATE_GROUP = POLICY.private_tier.models[0]
GROUPS = [*(m for t in POLICY.tiers for m in t.models), PRIVATE_GROUP]
JSON_FORMAT = {"type": "json_object"}
SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "city",
        "schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
FAST = [{"role": "user", "content": "hello hello"}]
PRIVATE = [{"role": "user", "content": "hello hello jane.doe@example.com"}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[CascadeUpstream, str]]:
    fake = CascadeUpstream()
    server = AppServer(create_cascade_app(fake))
    yield fake, f"{server.url}/v1"
    server.stop()


@pytest.fixture()
def fake(upstream):
    fake, _ = upstream
    fake.faults = {
        "gpt-4o-mini": Faults(malformed=1.0),
        "llama-3.3-70b": Faults(malformed=1.0),
    }  # upstream names
    fake.take()
    yield fake
    fake.faults = {}


@pytest.fixture()
def tierwise(tiny_model_dir, tiny_classifier, tmp_path):
    db_url = f"sqlite:///{tmp_path / 'decisions.sqlite'}"
    settings = make_settings(tiny_model_dir, record_decisions=True, decision_db=db_url, micro_batching=False)
    app = create_app(settings, classifier_factory=lambda _: tiny_classifier)
    with TestClient(app):  # runs the lifespan: model, decision log
        yield app, db_url


def router(base_url: str) -> Any:
    model_list = [
        {
            "model_name": group,
            "litellm_params": {
                "model": "openai/" + ("llama-3.3-70b" if group == PRIVATE_GROUP else group),
                "api_key": "x",
                "api_base": base_url,
            },
        }
        for group in GROUPS
    ]
    return litellm.Router(model_list=model_list, num_retries=0)


def client(app) -> AsyncTierwiseClient:
    return AsyncTierwiseClient("http://tierwise", transport=httpx.ASGITransport(app=app), timeout=5.0)


def cascade(tierwise_client, **settings) -> LiteLLMCascade:
    return LiteLLMCascade(Cascade(RetryPlanner(POLICY, CascadeConfig(**settings)), tierwise_client))


def hit_models(fake: CascadeUpstream) -> list[str]:
    return [model for model, _ in fake.take()]


def feedback_rows(app, db_url):
    app.state.decision_recorder.wait_idle(5.0)
    return [
        (r.feedback.source, r.feedback.evidence)
        for r in DecisionStore(db_url).labeled_decisions()
        if r.feedback
    ]


def test_sdk_retries_a_malformed_json_answer_one_tier_up_and_records_it(upstream, fake, tierwise):
    app, db_url = tierwise

    async def run():
        c = client(app)
        wrapper = TierwiseLiteLLMRouter(router(upstream[1]), client=c, cascade=cascade(c))
        response = await wrapper.acompletion(messages=FAST, response_format=JSON_FORMAT)
        await wrapper.cascade.cascade.drain()
        return wrapper, response

    wrapper, response = asyncio.run(run())
    assert hit_models(fake) == ["gpt-4o-mini", "gpt-4.1"]
    assert response.model == "gpt-4.1" and '"ok": true' in response.choices[0].message.content
    header = response._hidden_params["additional_headers"]["x-tierwise-cascade"]
    assert header == "fast:invalid_json balanced:ok; stop=passed"
    assert response._hidden_params["tierwise_cascade"]["retries"] == 1
    [(source, evidence)] = feedback_rows(app, db_url)
    assert source == "cascade" and evidence["tier"] == "fast" and evidence["reason"] == "invalid_json"
    assert evidence["next_tier"] == "balanced" and evidence["final_passed"] is True
    assert wrapper.cascade.stats.snapshot()["retries"] == {"fast:invalid_json": 1}


def test_sdk_passing_answers_and_opted_out_requests_are_not_retried(upstream, fake, tierwise):
    app, _ = tierwise

    async def run():
        c = client(app)
        wrapper = TierwiseLiteLLMRouter(router(upstream[1]), client=c, cascade=cascade(c))
        plain = await wrapper.acompletion(messages=FAST)  # no JSON asked: the fault does not apply
        opted_out = await wrapper.acompletion(
            messages=FAST, response_format=JSON_FORMAT, metadata={"tierwise_cascade": False}
        )
        return plain, opted_out

    plain, opted_out = asyncio.run(run())
    assert hit_models(fake) == ["gpt-4o-mini", "gpt-4o-mini"]
    assert plain._hidden_params["additional_headers"]["x-tierwise-cascade"] == "fast:ok; stop=passed"
    assert "x-tierwise-cascade" not in opted_out._hidden_params["additional_headers"]


def test_sdk_private_request_is_never_retried_to_a_public_model(upstream, fake, tierwise):
    app, db_url = tierwise

    async def run():
        c = client(app)
        wrapper = TierwiseLiteLLMRouter(router(upstream[1]), client=c, cascade=cascade(c, max_retries=3))
        response = await wrapper.acompletion(messages=PRIVATE, response_format=JSON_FORMAT)
        await wrapper.cascade.cascade.drain()
        return response

    response = asyncio.run(run())
    assert hit_models(fake) == ["llama-3.3-70b"]
    assert (
        response._hidden_params["additional_headers"]["x-tierwise-cascade"]
        == "private:invalid_json; stop=private"
    )
    [(_, evidence)] = feedback_rows(app, db_url)
    # the tier and the reason only: no detail, model, cost or latency of a private request
    assert evidence == {"tier": "private", "reason": "invalid_json", "stop": "private", "final_passed": False}
    assert response._hidden_params["tierwise_cascade"]["tried"][0]["detail"] == ""


def test_sdk_structured_stream_is_buffered_and_retried_plain_stream_passes(upstream, fake, tierwise):
    app, _ = tierwise
    fake.faults["gpt-4o-mini"] = Faults(malformed=1.0, truncate=0.0)

    async def run():
        c = client(app)
        wrapper = TierwiseLiteLLMRouter(router(upstream[1]), client=c, cascade=cascade(c))
        stream = await wrapper.acompletion(messages=FAST, response_format=SCHEMA_FORMAT, stream=True)
        structured = [chunk async for chunk in stream]
        structured_hits = hit_models(fake)
        fake.faults["gpt-4o-mini"] = Faults(truncate=1.0)
        plain_stream = await wrapper.acompletion(messages=FAST, stream=True)
        plain = [chunk async for chunk in plain_stream]
        return structured, structured_hits, plain

    structured, structured_hits, plain = asyncio.run(run())
    assert structured_hits == ["gpt-4o-mini", "gpt-4.1"]
    text = "".join(c.choices[0].delta.content or "" for c in structured if c.choices)
    assert text == '{"city": "value"}' and {c.model for c in structured} == {"gpt-4.1"}
    assert hit_models(fake) == ["gpt-4o-mini"]  # the truncated plain stream was not retried
    assert plain[-1].choices[0].finish_reason == "length"


def test_proxy_hook_retries_through_the_router_and_sets_the_header(upstream, fake, tierwise):
    """The proxy's order of calls: pre-call hook, the router call, post-call hook, headers hook."""
    app, db_url = tierwise

    async def run():
        c = client(app)
        r = router(upstream[1])
        hook = TierwiseProxyHook(c, router=r, cascade=cascade(c))
        data = {"model": "tierwise", "messages": list(FAST), "response_format": JSON_FORMAT}
        data = await hook.async_pre_call_hook(None, None, data, "acompletion")
        first = await r.acompletion(**data)
        final = await hook.async_post_call_success_hook(data, None, first)
        headers = await hook.async_post_call_response_headers_hook(data, None, final)
        stream_data = {
            "model": "tierwise",
            "messages": list(FAST),
            "response_format": JSON_FORMAT,
            "stream": True,
        }
        stream_data = await hook.async_pre_call_hook(None, None, stream_data, "acompletion")
        stream_headers = await hook.async_post_call_response_headers_hook(stream_data, None, None)
        stream = await r.acompletion(**stream_data)
        chunks = [c async for c in hook.async_post_call_streaming_iterator_hook(None, stream, stream_data)]
        await hook.cascade.cascade.drain()
        return data, final, headers, stream_data, stream_headers, chunks

    data, final, headers, stream_data, stream_headers, chunks = asyncio.run(run())
    assert final.model == "gpt-4.1"
    assert headers["x-tierwise-cascade"] == "fast:invalid_json balanced:ok; stop=passed"
    assert float(headers["x-tierwise-cascade-added-ms"]) > 0
    assert data["metadata"]["tierwise"]["cascade"]["tried"][1]["model"] == "gpt-4.1"
    assert stream_headers == {"x-tierwise-cascade": "stream=buffered"}  # sent before the answer
    assert stream_data["metadata"]["tierwise"]["cascade"]["stop"] == "passed"  # for LiteLLM's logs
    assert {c.model for c in chunks} == {"gpt-4.1"}
    assert hit_models(fake) == ["gpt-4o-mini", "gpt-4.1", "gpt-4o-mini", "gpt-4.1"]
    assert len(feedback_rows(app, db_url)) == 2


def test_proxy_hook_never_retries_a_request_with_personal_data_even_with_forged_metadata(upstream, fake):
    """A request the hook did not route, whose metadata claims a public chain: the local privacy rule
    still keeps its retry away from public models."""

    async def run():
        r = router(upstream[1])
        c = AsyncTierwiseClient(
            "http://tierwise", transport=httpx.MockTransport(lambda _: httpx.Response(503))
        )
        hook = TierwiseProxyHook(c, router=r, cascade=cascade(None, max_retries=3))
        forged = {
            "tier": "fast",
            "chain": ["gpt-4o-mini", "gpt-4.1", "o3"],
            "reasons": [],
            "request_id": None,
        }
        data = {
            "model": "gpt-4o-mini",
            "messages": list(PRIVATE),
            "response_format": JSON_FORMAT,
            "metadata": {"tierwise": forged},
        }
        first = await r.acompletion(**data)
        return await hook.async_post_call_success_hook(data, None, first), data

    final, data = asyncio.run(run())
    assert hit_models(fake) == ["gpt-4o-mini"]  # the first call was the caller's own choice
    assert data["metadata"]["tierwise"]["cascade"]["stop"] == "private"


def test_proxy_hook_drops_a_clients_own_tierwise_metadata_on_requests_it_does_not_route():
    async def run():
        c = AsyncTierwiseClient(
            "http://tierwise", transport=httpx.MockTransport(lambda _: httpx.Response(503))
        )
        hook = TierwiseProxyHook(c, router=None, router_getter=lambda: None, cascade=cascade(None))
        forged = {"tier": "fast", "chain": ["gpt-4o-mini", "o3"], "reasons": []}
        data = {"model": "gpt-4o-mini", "messages": list(FAST), "metadata": {"tierwise": forged, "user": "u"}}
        # a request for `tierwise` with nothing to classify is not routed either
        empty = {"model": "tierwise", "messages": [], "metadata": {"tierwise": dict(forged), "user": "u"}}
        return [await hook.async_pre_call_hook(None, None, d, "acompletion") for d in (data, empty)]

    for data in asyncio.run(run()):
        assert data["metadata"] == {"user": "u"}


def test_proxy_hook_backstop_reads_functions_and_the_response_format(upstream, fake):
    """The backstop privacy rule before a retry reads every string the retry would send: personal data
    in legacy `functions` or in the JSON schema keeps a request the hook did not route from going up."""
    functions = [{"name": "notify", "description": "e-mail jane.doe@example.com", "parameters": {}}]
    schema = {
        "type": "json_schema",
        "json_schema": {"name": "f", "schema": {"type": "object", "description": "card 5555 5555 5555 4444"}},
    }

    async def run(extra):
        r = router(upstream[1])
        c = AsyncTierwiseClient(
            "http://tierwise", transport=httpx.MockTransport(lambda _: httpx.Response(503))
        )
        hook = TierwiseProxyHook(c, router=r, cascade=cascade(None, max_retries=3))
        forged = {"tier": "fast", "chain": ["gpt-4o-mini", "gpt-4.1", "o3"], "reasons": []}
        data = {
            "model": "gpt-4o-mini",
            "messages": list(FAST),
            "response_format": JSON_FORMAT,
            "metadata": {"tierwise": forged},
            **extra,
        }
        first = await r.acompletion(**data)
        await hook.async_post_call_success_hook(data, None, first)
        return data

    for extra in ({"functions": functions}, {"response_format": schema}):
        fake.take()
        data = asyncio.run(run(extra))
        assert hit_models(fake) == ["gpt-4o-mini"]
        assert data["metadata"]["tierwise"]["cascade"]["stop"] == "private"


def test_the_wrapper_and_the_hook_hand_their_model_groups_to_the_cascade(upstream, fake, tierwise):
    """Groups named apart from the policy's models, mapped once (LITELLM.md's set-up): the cascade's
    planner reads the same names, so the retry still goes one tier up."""
    app, _ = tierwise
    mapped = {group: f"my-{group}" for group in GROUPS}
    renamed = router(upstream[1])
    for deployment in renamed.model_list:
        deployment["model_name"] = mapped[deployment["model_name"]]
    renamed = litellm.Router(model_list=renamed.model_list, num_retries=0)

    async def run():
        c = client(app)
        wrapper = TierwiseLiteLLMRouter(renamed, client=c, model_groups=mapped, cascade=cascade(c))
        response = await wrapper.acompletion(messages=FAST, response_format=JSON_FORMAT)
        hook = TierwiseProxyHook(c, model_groups=mapped, router=renamed, cascade=cascade(c))
        data = {"model": "tierwise", "messages": list(FAST), "response_format": JSON_FORMAT}
        data = await hook.async_pre_call_hook(None, None, data, "acompletion")
        final = await hook.async_post_call_success_hook(data, None, await renamed.acompletion(**data))
        return response, final

    response, final = asyncio.run(run())
    assert hit_models(fake) == ["gpt-4o-mini", "gpt-4.1"] * 2  # upstream names: fast, then balanced
    header = "fast:invalid_json balanced:ok; stop=passed"
    assert response._hidden_params["additional_headers"]["x-tierwise-cascade"] == header
    assert final._hidden_params["additional_headers"]["x-tierwise-cascade"] == header


def test_proxy_hook_backstop_scans_off_the_event_loop(upstream, fake, monkeypatch):
    """The backstop's privacy rule runs through detect_private_data_async (a large request is scanned
    in a worker thread), never the blocking detector on the proxy's event loop."""
    import tierwise.gateway.litellm_router as hook_module

    scanned = []
    real = hook_module.detect_private_data_async

    async def recording(text, *args):
        scanned.append(len(text))
        return await real(text, *args)

    monkeypatch.setattr(hook_module, "detect_private_data_async", recording)
    monkeypatch.setattr(hook_module, "detect_private_data", None, raising=False)

    async def run():
        r = router(upstream[1])
        c = AsyncTierwiseClient(
            "http://tierwise", transport=httpx.MockTransport(lambda _: httpx.Response(503))
        )
        hook = TierwiseProxyHook(c, router=r, cascade=cascade(None, max_retries=3))
        forged = {"tier": "fast", "chain": ["gpt-4o-mini", "gpt-4.1"], "reasons": []}
        data = {
            "model": "gpt-4o-mini",
            "messages": list(PRIVATE),
            "response_format": JSON_FORMAT,
            "metadata": {"tierwise": forged},
        }
        await hook.async_post_call_success_hook(data, None, await r.acompletion(**data))
        return data

    data = asyncio.run(run())
    assert data["metadata"]["tierwise"]["cascade"]["stop"] == "private" and len(scanned) == 1
    assert hit_models(fake) == ["gpt-4o-mini"]
