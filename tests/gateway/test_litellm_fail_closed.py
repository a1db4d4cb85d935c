"""A private request fails closed fast (issue 22, item 9): when the private tier's deployment fails, a
real `litellm.Router` calls it 1 + `private_retries` times (not 1 + the router's `num_retries`, each
retry after a back-off sleep), each attempt bounded by `private_timeout_s`, and never calls a public
deployment. Proven by counting the calls a local fake upstream receives, never by wall-clock times.

All slow: importing LiteLLM alone takes seconds (tests/conftest.py skips the module in the fast loop)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from tierwise.core.policy_file import DEFAULT_POLICY_FILE, load_policy
from tierwise.gateway.client import AsyncTierwiseClient
from tierwise.gateway.wire import Routing

from tests.helpers.gateway import refused_transport
from tests.helpers.timing import HANG_SECONDS

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network: LiteLLM's bundled price map
litellm = pytest.importorskip("litellm")
litellm.telemetry = False
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::UserWarning"),  # pydantic notes about LiteLLM's own types
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

from tierwise.gateway.litellm_chain import (  # noqa: E402  (after the environment is set for LiteLLM)
    PRIVATE_RETRIES,
    PRIVATE_TIMEOUT_S,
    fail_closed_fields,
    routed_chain,
)
from tierwise.gateway.litellm_router import (  # noqa: E402
    TierwiseLiteLLMRouter,
    TierwiseProxyHook,
    proxy_hook_from_environment,
)

POLICY = load_policy(DEFAULT_POLICY_FILE)
assert POLICY.private_tier is not None
PRIVATE_GROUP = POLICY.private_tier.models[0]  # the LiteLLM model group named after the private model
PRIVATE_UPSTREAM_MODEL = "llama-3.3-70b"  # what that group's deployment asks the upstream for
PUBLIC_GROUPS = [model for tier in POLICY.tiers for model in tier.models]
# Tierwise is unreachable, so the client's local privacy rule sends this to the private tier.
PRIVATE_MESSAGES = [{"role": "user", "content": "send the invoice to jane.doe@example.com"}]


class FakeUpstream:
    """An OpenAI-compatible /v1/chat/completions on 127.0.0.1 that records the model of every call and
    answers per `mode`: "ok" (a completion), "fail" (500, no header telling the SDK not to retry) or
    "hang" (no answer until `release` is set, then a completion)."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.calls: list[str] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802  (the http.server method name)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                model = str(body.get("model"))
                with upstream.lock:
                    upstream.calls.append(model)
                if upstream.mode == "hang":
                    upstream.release.wait(HANG_SECONDS)
                if upstream.mode == "fail":
                    self.answer(500, {"error": {"message": "down", "type": "server_error"}})
                    return
                self.answer(
                    200,
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion",
                        "created": 0,
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": f"answer from {model}"},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
                    },
                )

            def answer(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (its timeout) before a hung answer came
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream()
    yield server
    server.stop()


def litellm_router(upstream: FakeUpstream, num_retries: int) -> Any:
    """Every group of the default policy, public and private, served by the fake upstream."""
    public = [
        {
            "model_name": name,
            "litellm_params": {"model": f"openai/{name}", "api_key": "x", "api_base": upstream.base_url},
        }
        for name in PUBLIC_GROUPS
    ]
    private = {
        "model_name": PRIVATE_GROUP,
        "litellm_params": {
            "model": f"openai/{PRIVATE_UPSTREAM_MODEL}",
            "api_key": "none",
            "api_base": upstream.base_url,
        },
    }
    return litellm.Router(model_list=[*public, private], num_retries=num_retries)


def call_private(upstream: FakeUpstream, path: str, router_retries: int, **settings: Any) -> Any:
    """A private request through the SDK wrapper or the proxy hook (whose rewritten request goes to the
    same Router, as the proxy does); returns the response or the exception it ended with."""

    async def run() -> Any:
        router = litellm_router(upstream, router_retries)
        client = AsyncTierwiseClient(transport=refused_transport())
        if path == "sdk":
            wrapper = TierwiseLiteLLMRouter(router, client=client, **settings)
            return await wrapper.acompletion(messages=PRIVATE_MESSAGES)
        hook = TierwiseProxyHook(client, router=router, **settings)
        data = {"model": "tierwise", "messages": list(PRIVATE_MESSAGES)}
        data = await hook.async_pre_call_hook(None, None, data, "acompletion")
        assert data["model"] == PRIVATE_GROUP
        return await router.acompletion(**data)

    try:
        return asyncio.run(run())
    except Exception as err:  # the fail-closed error is what these tests expect
        return err


@pytest.mark.parametrize("path", ["sdk", "hook"])
def test_failing_private_deployment_is_called_once_not_retried(upstream, path):
    """The router retries twice by default; the private request makes 1 + PRIVATE_RETRIES (0) calls."""
    upstream.mode = "fail"
    outcome = call_private(upstream, path, router_retries=2)
    assert isinstance(outcome, litellm.InternalServerError), outcome  # failed closed, with an error
    assert upstream.calls == [PRIVATE_UPSTREAM_MODEL] * (1 + PRIVATE_RETRIES)
    assert not set(upstream.calls) & set(PUBLIC_GROUPS)  # no public deployment was called


@pytest.mark.parametrize("path", ["sdk", "hook"])
def test_private_retries_setting_is_the_bound(upstream, path):
    """private_retries=1 on a router that retries none: exactly 2 calls, all to the private deployment."""
    upstream.mode = "fail"
    outcome = call_private(upstream, path, router_retries=0, private_retries=1)
    assert isinstance(outcome, litellm.InternalServerError), outcome
    assert upstream.calls == [PRIVATE_UPSTREAM_MODEL] * 2


@pytest.mark.parametrize("path", ["sdk", "hook"])
def test_hung_private_deployment_times_out_after_the_setting(upstream, path):
    """A private deployment that never answers (until the test ends, HANG_SECONDS at most): the request
    ends with LiteLLM's Timeout, after at most one call, instead of waiting for the answer."""
    upstream.mode = "hang"
    outcome = call_private(upstream, path, router_retries=2, private_timeout_s=1.0)
    assert isinstance(outcome, litellm.Timeout), outcome
    assert upstream.calls in ([], [PRIVATE_UPSTREAM_MODEL])  # [] only if the connect itself timed out


def test_private_request_answers_when_its_deployment_does(upstream):
    outcome = call_private(upstream, "sdk", router_retries=2)
    assert outcome.choices[0].message.content == f"answer from {PRIVATE_UPSTREAM_MODEL}"
    assert upstream.calls == [PRIVATE_UPSTREAM_MODEL]


# The request fields


def test_only_private_requests_get_the_bounds():
    client = AsyncTierwiseClient(transport=refused_transport())
    public = Routing(tier="balanced", model="gpt-4.1", fallbacks=("claude-sonnet-4", "o3"))
    _, fields = routed_chain(public, None, {}, client, {"num_retries": 3, "timeout": 600})
    assert fields == {"fallbacks": ["claude-sonnet-4", "o3"]}  # the router's own retries and timeouts
    private = Routing(tier=POLICY.private_tier.name, model=PRIVATE_GROUP, fallbacks=())
    _, fields = routed_chain(private, None, {}, client, {}, private_retries=1, private_timeout_s=7.5)
    assert fields == {
        "fallbacks": [],
        "context_window_fallbacks": [],
        "content_policy_fallbacks": [],
        "num_retries": 1,
        "timeout": 7.5,
        "stream_timeout": 7.5,
    }


def test_fail_closed_fields_keep_a_tighter_request_and_cap_a_looser_one():
    defaults = fail_closed_fields({})
    assert defaults == {
        "num_retries": PRIVATE_RETRIES,
        "timeout": PRIVATE_TIMEOUT_S,
        "stream_timeout": PRIVATE_TIMEOUT_S,
    }
    tighter = fail_closed_fields({"num_retries": 0, "timeout": 5, "stream_timeout": 2.5}, 2, 30.0)
    assert (tighter["num_retries"], tighter["timeout"], tighter["stream_timeout"]) == (0, 5, 2.5)
    looser = fail_closed_fields({"num_retries": 5, "timeout": 600, "stream_timeout": 900}, 1, 30.0)
    assert looser == {"num_retries": 1, "timeout": 30.0, "stream_timeout": 30.0}
    for odd in ({"timeout": 0}, {"timeout": "600"}, {"timeout": True}, {"num_retries": -1}):
        fields = fail_closed_fields(odd, 1, 30.0)  # 0 means "no timeout" to LiteLLM: capped too
        assert (fields["num_retries"], fields["timeout"]) == (1, 30.0)


@pytest.mark.parametrize(
    "settings",
    [
        {"private_retries": -1},
        {"private_retries": 1.5},
        {"private_timeout_s": 0},
        {"private_timeout_s": float("inf")},
    ],
)
def test_invalid_bounds_are_refused(settings):
    client = AsyncTierwiseClient(transport=refused_transport())
    with pytest.raises(ValueError, match="private_"):
        TierwiseProxyHook(client, **settings)
    with pytest.raises(ValueError, match="private_"):
        TierwiseLiteLLMRouter(object(), client=client, **settings)


def test_proxy_hook_reads_the_bounds_from_the_environment(monkeypatch):
    monkeypatch.delenv("TIERWISE_PRIVATE_RETRIES", raising=False)
    monkeypatch.delenv("TIERWISE_PRIVATE_TIMEOUT_SECONDS", raising=False)
    hook = proxy_hook_from_environment()
    assert (hook.private_retries, hook.private_timeout_s) == (PRIVATE_RETRIES, PRIVATE_TIMEOUT_S)
    monkeypatch.setenv("TIERWISE_PRIVATE_RETRIES", "1")
    monkeypatch.setenv("TIERWISE_PRIVATE_TIMEOUT_SECONDS", "12.5")
    hook = proxy_hook_from_environment()
    assert (hook.private_retries, hook.private_timeout_s) == (1, 12.5)
