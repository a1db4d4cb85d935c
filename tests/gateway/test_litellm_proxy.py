"""The real LiteLLM proxy (`litellm --config`, litellm[proxy] 1.106.2) with the config documented in
serving/tierwise/gateway/LITELLM.md, in front of a fake OpenAI/Anthropic/Gemini-compatible upstream and a tierwise service,
all on 127.0.0.1: the routing table, the private tier, fail-upward, and the no-leak rule under load.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from tierwise.core.policy_file import DEFAULT_POLICY_FILE, load_policy
from tierwise.core.privacy import detect_private_data
from tierwise.service.app import create_app

from tools.cascade_fake import AppServer
from tools.cascade_stack import StackError, documented_proxy_config, litellm_proxy, proxy_environment
from tools.privacy_cases import CARD_CASES
from tools.tiny_model import make_settings

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

MASTER_KEY = "sk-tierwise-test-master-key"
PROMPTS = {"fast": "hello hello", "balanced": "write an email", "frontier": "prove the theorem"}
POLICY = load_policy(DEFAULT_POLICY_FILE)
PRIVATE_GROUP = POLICY.private_tier.models[0] if POLICY.private_tier else ""
PUBLIC_GROUPS = {model for tier in POLICY.tiers for model in tier.models}


@dataclass
class Upstream:
    """A fake OpenAI-, Anthropic- and Gemini-compatible API that answers with the model it was asked for."""

    hits: list[tuple[str, str]] = field(default_factory=list)  # (model, the request's text)
    failing: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> FastAPI:
        app = FastAPI()

        def record(model: str, body: dict[str, Any]) -> bool:
            text = "\n".join(str(m.get("content")) for m in body.get("messages", []))
            text += "\n".join(  # Gemini: contents[].parts[].text
                str(part.get("text")) for c in body.get("contents", []) for part in c.get("parts", [])
            )
            with self.lock:
                self.hits.append((model, text))
            return model in self.failing

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> JSONResponse:
            body = await request.json()
            model = str(body["model"])
            if record(model, body):
                return JSONResponse(  # a failing deployment, without SDK-level retries and back-off
                    {"error": {"message": "down", "type": "server_error"}},
                    status_code=500,
                    headers={"x-should-retry": "false"},
                )
            return JSONResponse(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": f"answer from {model}"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
                }
            )

        @app.post("/v1/messages")
        async def messages(request: Request) -> JSONResponse:
            body = await request.json()
            model = str(body["model"])
            if record(model, body):
                return JSONResponse(
                    {"type": "error", "error": {"type": "api_error", "message": "down"}},
                    status_code=500,
                    headers={"x-should-retry": "false"},
                )
            return JSONResponse(
                {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": f"answer from {model}"}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": 5, "output_tokens": 3},
                }
            )

        @app.post("/v1beta/models/{call}")
        async def generate_content(call: str, request: Request) -> JSONResponse:
            model, _, method = call.partition(":")  # e.g. gemini-2.0-flash:generateContent
            if method != "generateContent":
                return JSONResponse({"error": {"code": 404, "message": call}}, status_code=404)
            if record(model, await request.json()):
                return JSONResponse(
                    {"error": {"code": 500, "message": "down", "status": "INTERNAL"}}, status_code=500
                )
            return JSONResponse(
                {
                    "candidates": [
                        {
                            "content": {"role": "model", "parts": [{"text": f"answer from {model}"}]},
                            "finishReason": "STOP",
                            "index": 0,
                        }
                    ],
                    "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 3, "totalTokenCount": 8},
                    "modelVersion": model,
                }
            )

        return app

    def take(self) -> list[tuple[str, str]]:
        with self.lock:
            hits, self.hits = self.hits, []
        return hits


class Switch:
    """Wraps the tierwise app: "ok", "slow" (answers after `delay` s) or "error" (503)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.mode = "ok"
        self.delay = 0.75  # past the hook's 0.25 s timeout

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.mode == "slow":
            await asyncio.sleep(self.delay)
        if scope["type"] == "http" and self.mode == "error":
            await JSONResponse({"error": {"type": "internal_error", "message": "down"}}, 503)(
                scope, receive, send
            )
            return
        await self.app(scope, receive, send)


@dataclass
class Stack:
    proxy_url: str
    upstream: Upstream
    tierwise: Switch
    tierwise_server: AppServer


@pytest.fixture(scope="module")
def stack(tiny_model_dir, tiny_classifier, tmp_path_factory) -> Iterator[Stack]:
    upstream = Upstream()
    upstream_server = AppServer(upstream.app(), lifespan="on")
    switch = Switch(create_app(make_settings(tiny_model_dir), classifier_factory=lambda _: tiny_classifier))
    tierwise_server = AppServer(switch, lifespan="on")
    env = proxy_environment(
        upstream_server.url, tierwise_server.url, DEFAULT_POLICY_FILE, tierwise_timeout_seconds=0.25
    )
    env["LITELLM_MASTER_KEY"] = MASTER_KEY
    try:
        with litellm_proxy(documented_proxy_config(), env, tmp_path_factory.mktemp("litellm")) as proxy_url:
            yield Stack(proxy_url, upstream, switch, tierwise_server)
    except StackError as err:
        if (
            "ModuleNotFoundError" in str(err)
            or "ImportError" in str(err)
            or "no `litellm` command" in str(err)
        ):
            pytest.skip(f"the LiteLLM proxy cannot start (install the gateway extra):\n{str(err)[-1500:]}")
        pytest.fail(str(err))
    finally:
        tierwise_server.stop()
        upstream_server.stop()


@pytest.fixture
def proxy(stack: Stack) -> Iterator[Stack]:
    stack.tierwise.mode = "ok"
    stack.upstream.failing.clear()
    stack.upstream.take()
    yield stack
    if stack.tierwise.mode == "slow":
        time.sleep(stack.tierwise.delay)  # let the late answers drain before the next test
    stack.tierwise.mode = "ok"
    stack.upstream.failing.clear()


def chat(stack: Stack, content: str, model: str = "tierwise", timeout: float = 30.0) -> httpx.Response:
    return httpx.post(
        f"{stack.proxy_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"},
        json={"model": model, "messages": [{"role": "user", "content": content}]},
        timeout=timeout,
    )


def answered_by(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["model"])


def test_documented_config_has_every_policy_group_and_a_master_key():
    config = documented_proxy_config()
    groups = {entry["model_name"] for entry in config["model_list"]}
    assert PUBLIC_GROUPS | {PRIVATE_GROUP} <= groups
    assert "tierwise" not in groups  # without the hook, `tierwise` must be refused, not sent anywhere
    assert str(config["general_settings"]["master_key"]).startswith("os.environ/")


def test_each_group_of_the_config_answers(proxy):
    for group in sorted(PUBLIC_GROUPS | {PRIVATE_GROUP}):
        assert answered_by(chat(proxy, "hello", model=group)) == group
    hit_models = {model for model, _ in proxy.upstream.take()}
    assert {"gpt-4o-mini", "gemini-2.0-flash", "gpt-4.1", "o3", "llama-3.3-70b"} <= hit_models
    for claude in ("claude-3-5-haiku", "claude-sonnet-4", "claude-opus-4-1"):
        assert any(model.startswith(claude) for model in hit_models), claude


@pytest.mark.parametrize(
    ("tier", "group"), [("fast", "gpt-4o-mini"), ("balanced", "gpt-4.1"), ("frontier", "o3")]
)
def test_routing_table_response_names_the_group(proxy, tier, group):
    response = chat(proxy, PROMPTS[tier])
    assert answered_by(response) == group  # not "tierwise"
    assert response.headers["x-litellm-model-group"] == group
    assert [model for model, _ in proxy.upstream.take()] == [group]


def test_private_data_goes_to_the_private_tier_only(proxy):
    response = chat(proxy, f"{PROMPTS['frontier']}, my card is 4111 1111 1111 1111")
    assert answered_by(response) == PRIVATE_GROUP
    assert [model for model, _ in proxy.upstream.take()] == ["llama-3.3-70b"]


def test_private_request_fails_closed_when_the_private_deployment_fails(proxy):
    proxy.upstream.failing.add("llama-3.3-70b")
    response = httpx.post(  # num_retries 0: LiteLLM's retry of a lone deployment waits out its cooldown
        f"{proxy.proxy_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        json={
            "model": "tierwise",
            "messages": [{"role": "user", "content": "send the invoice to jane.doe@example.com"}],
            "num_retries": 0,
        },
        timeout=30,
    )
    assert response.status_code >= 500, response.text
    assert {model for model, _ in proxy.upstream.take()} == {"llama-3.3-70b"}  # no public fallback


@pytest.mark.parametrize("mode", ["error", "slow"])
def test_fails_upward_to_the_top_tier_when_tierwise_fails(proxy, mode):
    proxy.tierwise.mode = mode
    started = time.perf_counter()
    assert answered_by(chat(proxy, PROMPTS["fast"])) == POLICY.tiers[-1].models[0]
    assert time.perf_counter() - started < 5
    assert answered_by(chat(proxy, "my IBAN is DE89 3704 0044 0532 0130 00")) == PRIVATE_GROUP


def test_no_private_data_reaches_a_public_model_under_load(proxy):
    """32 concurrent clients while tierwise answers too late: 16 with card numbers, 16 without."""
    proxy.tierwise.mode = "slow"
    private_prompts = [f"please charge {text}" for text, _ in CARD_CASES[:16]]
    ordinary = [f"{PROMPTS['fast']} number {i}" for i in range(16)]

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
            timeout=60,
            limits=httpx.Limits(max_connections=64),
        ) as client:
            calls = [
                client.post(
                    f"{proxy.proxy_url}/v1/chat/completions",
                    json={"model": "tierwise", "messages": [{"role": "user", "content": text}]},
                )
                for text in [*private_prompts, *ordinary]
            ]
            return await asyncio.gather(*calls)

    responses = asyncio.run(run())
    models = [answered_by(response) for response in responses]
    assert models[:16] == [PRIVATE_GROUP] * 16
    assert models[16:] == [POLICY.tiers[-1].models[0]] * 16
    hits = proxy.upstream.take()
    leaked = [model for model, text in hits if model != "llama-3.3-70b" and detect_private_data(text)]
    print(f"\nPII requests reaching a public model under load: {len(leaked)} of {len(private_prompts)}")
    assert leaked == [] and len(hits) == 32


def test_hook_latency_is_reported(proxy):
    """The hook's added latency: `tierwise` (classify + route) vs a group asked for directly."""
    for _ in range(3):  # warm both paths
        chat(proxy, PROMPTS["fast"])
        chat(proxy, PROMPTS["fast"], model="gpt-4o-mini")
    routed, direct, classified = [], [], 0
    for _ in range(20):
        started = time.perf_counter()
        classified += answered_by(chat(proxy, PROMPTS["fast"])) == "gpt-4o-mini"  # not failed upward
        routed.append(time.perf_counter() - started)
        started = time.perf_counter()
        assert answered_by(chat(proxy, PROMPTS["fast"], model="gpt-4o-mini")) == "gpt-4o-mini"
        direct.append(time.perf_counter() - started)
    added_ms = (statistics.median(routed) - statistics.median(direct)) * 1000
    print(
        f"\nhook's added latency: median {added_ms:.1f} ms (routed {statistics.median(routed) * 1000:.1f} ms, "
        f"direct {statistics.median(direct) * 1000:.1f} ms); {classified} of 20 routed by tierwise in time"
    )
    # On a busy machine a call may miss the 0.25 s timeout and fail upward; most must not.
    assert classified >= 15 and added_ms < 250


def test_fails_upward_when_tierwise_is_stopped(proxy):
    proxy.tierwise_server.stop()  # connection refused from now on (the last test of the module)
    assert answered_by(chat(proxy, PROMPTS["fast"])) == POLICY.tiers[-1].models[0]
    assert answered_by(chat(proxy, "call me on +44 20 7946 0958")) == PRIVATE_GROUP
