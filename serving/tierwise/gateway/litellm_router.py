"""LiteLLM integration: ask tierwise for the tier, call the LiteLLM deployment configured for it,
and fall back to the stronger models in order.

Name the LiteLLM model groups (`model_name` in the router's `model_list`) after the models in the
tierwise policy (`tiers[].models` in policy.yaml), or map them with `model_groups={policy model:
LiteLLM model_name}`. A request for the virtual model `tierwise` (`auto_model`) is then routed:

- SDK: `TierwiseLiteLLMRouter(router, client).acompletion(messages=...)` (or `.completion(...)`);
  any other model name passes straight through to the router.
- Proxy: `TierwiseProxyHook` is a LiteLLM `CustomLogger` whose `async_pre_call_hook` rewrites
  `model` and `fallbacks` of requests for `tierwise` before the proxy routes them.

The chain is the decision's `model` then its `fallbacks` (the tier's other models, then stronger
tiers' models), kept to the groups the router knows. When tierwise is down or slow the client fails
upward, so the chain starts at the top tier, except for a request with personal data or secrets:
the client applies the privacy rule itself and sends it to the policy's private tier. A private
request never falls back to a public group (its fallbacks, context-window and content-policy
fallbacks are set to the private tier's own models, overriding the router's defaults), and when no
private group is configured it is refused (`PrivateDataUnroutableError`). A private request also fails
closed fast: it carries `num_retries` = `private_retries` (default `PRIVATE_RETRIES`, 0) and
`timeout`/`stream_timeout` = `private_timeout_s` (default `PRIVATE_TIMEOUT_S`, seconds per attempt),
so a failing private deployment ends in an error after at most 1 + private_retries attempts of at
most private_timeout_s each per private model group (plus LiteLLM's back-off sleeps when
private_retries > 0), instead of waiting out the router's retries and their back-off. The proxy hook
also sets `response.model` to the model group that answered (LiteLLM would otherwise echo
`tierwise`). See serving/tierwise/gateway/LITELLM.md for a copy-paste config.

Import LiteLLM with `LITELLM_LOCAL_MODEL_COST_MAP=True` in the environment on machines without
internet access (LiteLLM otherwise fetches its price map on import).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from tierwise.core.privacy import PRIVATE_DATA, detect_private_data_async
from tierwise.gateway.cascade_litellm import (
    LiteLLMCascade,
    after_call,
    after_call_sync,
    cascade_headers,
    record_outcome,
)
from tierwise.gateway.client import AsyncTierwiseClient, TierwiseClient
from tierwise.gateway.upward import request_strings
from tierwise.gateway.wire import PrivateDataUnroutableError, Routing

logger = logging.getLogger("tierwise.litellm")

AUTO_MODEL = "tierwise"
ROUTED_CALL_TYPES = {
    "completion",
    "acompletion",
    "text_completion",
    "atext_completion",
    "responses",
    "aresponses",
}


# How long a private request may take to fail closed: LiteLLM's retries of it after a failure (each after
# a back-off sleep; 0: the private tier's other models, its `fallbacks`, are the second chance) and the
# timeout of each attempt in seconds (for a non-streamed answer it bounds the whole generation, so keep
# it above the private model's slowest answer). Settings of TierwiseLiteLLMRouter / TierwiseProxyHook
# (`private_retries=`, `private_timeout_s=`; the proxy's hook: TIERWISE_PRIVATE_RETRIES,
# TIERWISE_PRIVATE_TIMEOUT_SECONDS); see LITELLM.md.
PRIVATE_RETRIES = 0
PRIVATE_TIMEOUT_S = 60.0


class NoDeploymentError(LookupError):
    """None of the models tierwise chose is a model group in the LiteLLM router."""


def router_model_groups(router: Any) -> set[str]:
    """The `model_name`s of a litellm.Router (plus its model group aliases)."""
    names = {str(d.get("model_name")) for d in getattr(router, "model_list", []) or []}
    names.update(str(alias) for alias in (getattr(router, "model_group_alias", None) or {}))
    return names


def model_chain(
    routing: Routing, known_groups: Iterable[str] | None, model_groups: Mapping[str, str]
) -> list[str]:
    """LiteLLM model groups to try, in order, for a tierwise decision."""
    known = None if known_groups is None else set(known_groups)
    chain: list[str] = []
    for model in routing.models:
        group = model_groups.get(model, model)
        if (known is None or group in known) and group not in chain:
            chain.append(group)
    if not chain:
        raise NoDeploymentError(
            f"tierwise chose {list(routing.models)} (tier {routing.tier}) but the LiteLLM router has no model "
            f"group of those names (it has {sorted(known or [])}); name the model_list entries after the "
            "policy's models or pass model_groups={policy model: LiteLLM model_name}"
        )
    return chain


def is_private(routing: Routing, client: TierwiseClient | AsyncTierwiseClient | None) -> bool:
    """Whether the decision sends the request to the private tier (personal data or secrets)."""
    private_tier = client.upward.private_tier if client is not None else None
    return PRIVATE_DATA in routing.reasons or (private_tier is not None and routing.tier == private_tier)


def checked_private_bounds(retries: int, timeout_s: float) -> tuple[int, float]:
    """(private_retries, private_timeout_s), validated: retries an int >= 0, a finite timeout > 0."""
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"private_retries must be an int >= 0, got {retries!r}")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < math.inf:
        raise ValueError(f"private_timeout_s must be a number of seconds > 0, got {timeout_s!r}")
    return retries, float(timeout_s)


def _at_most(requested: Any, limit: float, allow_zero: bool) -> Any:
    """The request's own value when it is a number within the limit (a tighter bound), else the limit."""
    if isinstance(requested, bool) or not isinstance(requested, (int, float)):
        return limit
    lowest_ok = requested >= 0 if allow_zero else requested > 0  # a timeout of 0 means "none" to LiteLLM
    return requested if lowest_ok and requested <= limit else limit


def fail_closed_fields(
    request: Mapping[str, Any], retries: int = PRIVATE_RETRIES, timeout_s: float = PRIVATE_TIMEOUT_S
) -> dict[str, Any]:
    """The LiteLLM request fields that bound how long a private request takes to fail: the Router's
    retries (`num_retries`, which overrides the router's and the deployment's; the Router sleeps a
    back-off after each failed attempt once it retries at all) and each attempt's timeout (`timeout`,
    and `stream_timeout`, which a deployment's own would otherwise override for a stream). A tighter
    value the request already carries is kept. (`max_retries`, the provider SDK's retries, is left
    alone: the Router sets it to 0 and does not retry through it.)"""
    return {
        "num_retries": int(_at_most(request.get("num_retries"), retries, allow_zero=True)),
        "timeout": _at_most(request.get("timeout"), timeout_s, allow_zero=False),
        "stream_timeout": _at_most(request.get("stream_timeout"), timeout_s, allow_zero=False),
    }


def routed_chain(
    routing: Routing,
    known_groups: Iterable[str] | None,
    model_groups: Mapping[str, str],
    client: TierwiseClient | AsyncTierwiseClient | None,
    request: Mapping[str, Any] | None = None,
    private_retries: int = PRIVATE_RETRIES,
    private_timeout_s: float = PRIVATE_TIMEOUT_S,
) -> tuple[list[str], dict[str, Any]]:
    """The chain of model groups and the request fields that make LiteLLM follow it; a private
    request's fallbacks of every kind stay inside the private tier, and its retries and timeouts are
    bounded (`fail_closed_fields`; `request`: the call's own fields)."""
    private = is_private(routing, client)
    try:
        chain = model_chain(routing, known_groups, model_groups)
    except NoDeploymentError as err:
        if private:
            raise PrivateDataUnroutableError(
                f"the request carries personal data or secrets, so it may only go to the private tier "
                f"{routing.tier!r} ({', '.join(routing.models)}), and the LiteLLM router has no model group "
                "for it: add a model_list entry named after the private tier's model (policy.yaml "
                "private_tier.models; see serving/tierwise/gateway/LITELLM.md) or map it with model_groups="
            ) from err
        raise
    fields: dict[str, Any] = {"fallbacks": chain[1:]}
    if private:
        fields["context_window_fallbacks"] = []
        fields["content_policy_fallbacks"] = []
        fields.update(fail_closed_fields(request or {}, private_retries, private_timeout_s))
    return chain, fields


def request_tools(data: Mapping[str, Any], key: str = "tools") -> list[dict[str, Any]] | None:
    """The OpenAI `tools` (or legacy `functions`) of a LiteLLM request body: tierwise scans them for
    private data too."""
    tools = data.get(key)
    if isinstance(tools, list) and tools:
        return [dict(t) for t in tools if isinstance(t, Mapping)]
    return None


def scanned_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """`classify`'s keyword arguments for what else of a chat body reaches the model and may carry
    personal data: `tools`, legacy `functions`, `response_format` (its JSON schema)."""
    response_format = data.get("response_format")
    return {
        "tools": request_tools(data),
        "functions": request_tools(data, "functions"),
        "response_format": dict(response_format) if isinstance(response_format, Mapping) else None,
    }


def classify_input(data: Mapping[str, Any]) -> tuple[str | None, list[dict[str, Any]] | None, dict[str, Any]]:
    """(text, messages, scanned fields) to classify a LiteLLM request body with. A prompt string that
    comes with tools, functions or a response format is sent as one user message, so the service
    scans those too (it takes them only beside messages)."""
    text, messages = request_messages(data)
    fields = scanned_fields(data)
    if text is not None and any(v is not None for v in fields.values()):
        text, messages = None, [{"role": "user", "content": text}]
    return text, messages, fields if messages is not None else {}


def request_messages(data: Mapping[str, Any]) -> tuple[str | None, list[dict[str, Any]] | None]:
    """(text, messages) tierwise should classify, from a LiteLLM request body."""
    messages = data.get("messages")
    if isinstance(messages, list) and messages:
        return None, [dict(m) for m in messages if isinstance(m, Mapping)]
    for key in ("prompt", "input"):
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value, None
        if isinstance(value, list) and value and all(isinstance(m, Mapping) for m in value):
            return None, [dict(m) for m in value]
    return None, None


def annotate(metadata: Mapping[str, Any] | None, routing: Routing, chain: Sequence[str]) -> dict[str, Any]:
    """Request metadata with the decision, so LiteLLM logs and callbacks see it."""
    out = dict(metadata or {})
    out["tierwise"] = {
        "tier": routing.tier,
        "request_id": routing.request_id,
        "model_version": routing.model_version,
        "reasons": list(routing.reasons),
        "failed_upward": routing.failed_upward,
        "chain": list(chain),
    }
    return out


class TierwiseLiteLLMRouter:
    """Wraps a `litellm.Router`: calls for `auto_model` are routed by tierwise, others pass through."""

    def __init__(
        self,
        router: Any,
        client: AsyncTierwiseClient | None = None,
        sync_client: TierwiseClient | None = None,
        model_groups: Mapping[str, str] | None = None,
        auto_model: str = AUTO_MODEL,
        private_retries: int = PRIVATE_RETRIES,
        private_timeout_s: float = PRIVATE_TIMEOUT_S,
        cascade: LiteLLMCascade | None = None,
    ) -> None:
        self.router = router
        self.cascade = cascade  # check answers and retry one tier up (LiteLLMCascade.from_policy)
        self.client = client
        self.sync_client = sync_client
        self.model_groups = dict(model_groups or {})
        if cascade is not None:  # its retries follow the chains this wrapper builds
            cascade.use_model_groups(self.model_groups)
        self.auto_model = auto_model
        self.private_retries, self.private_timeout_s = checked_private_bounds(
            private_retries, private_timeout_s
        )
        self.last_routing: Routing | None = None

    def _route(self, routing: Routing, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        client = self.client or self.sync_client
        chain, fields = routed_chain(
            routing,
            router_model_groups(self.router),
            self.model_groups,
            client,
            kwargs,
            self.private_retries,
            self.private_timeout_s,
        )
        self.last_routing = routing
        kwargs.update(fields)
        kwargs["metadata"] = annotate(kwargs.get("metadata"), routing, chain)
        return chain[0], kwargs

    async def acompletion(
        self, messages: list[dict[str, Any]], model: str | None = None, **kwargs: Any
    ) -> Any:
        """`litellm.Router.acompletion`, with `model` chosen by tierwise when it is `auto_model` (default)."""
        model = model or self.auto_model
        if model != self.auto_model:
            return await self.router.acompletion(model=model, messages=messages, **kwargs)
        if self.client is None:
            raise ValueError("TierwiseLiteLLMRouter.acompletion needs client=AsyncTierwiseClient(...)")
        route = kwargs.pop("tierwise_route", None)
        routing = await self.client.classify(messages=messages, route=route, **scanned_fields(kwargs))
        chosen, kwargs = self._route(routing, kwargs)
        response = await self.router.acompletion(model=chosen, messages=messages, **kwargs)
        if self.cascade is None:
            return response
        request = {**kwargs, "model": chosen, "messages": messages}
        private = is_private(routing, self.client)
        return await after_call(self.cascade, self.router, request, response, private, route)

    def completion(self, messages: list[dict[str, Any]], model: str | None = None, **kwargs: Any) -> Any:
        """`litellm.Router.completion`, with `model` chosen by tierwise when it is `auto_model` (default)."""
        model = model or self.auto_model
        if model != self.auto_model:
            return self.router.completion(model=model, messages=messages, **kwargs)
        if self.sync_client is None:
            raise ValueError("TierwiseLiteLLMRouter.completion needs sync_client=TierwiseClient(...)")
        route = kwargs.pop("tierwise_route", None)
        routing = self.sync_client.classify(messages=messages, route=route, **scanned_fields(kwargs))
        chosen, kwargs = self._route(routing, kwargs)
        response = self.router.completion(model=chosen, messages=messages, **kwargs)
        if self.cascade is None:
            return response
        request = {**kwargs, "model": chosen, "messages": messages}
        private = is_private(routing, self.sync_client)
        return after_call_sync(self.cascade, self.router, request, response, private, route)


def _raw_model_name_key() -> str:
    try:
        from litellm.constants import RETURN_RAW_MODEL_NAME_METADATA_KEY
    except ImportError:  # litellm missing or older: the key of 1.106.2
        return "_complexity_router_return_raw_model_name"
    return str(RETURN_RAW_MODEL_NAME_METADATA_KEY)


_RAW_MODEL_NAME_KEY = _raw_model_name_key()


def _proxy_router() -> Any:
    try:
        from litellm.proxy.proxy_server import llm_router  # only inside a running LiteLLM proxy
    except Exception:
        return None
    return llm_router


def _custom_logger_base() -> type:
    try:
        from litellm.integrations.custom_logger import CustomLogger
    except ImportError:  # the hook is only usable with litellm installed; keep this module importable
        return object
    return CustomLogger


class TierwiseProxyHook(_custom_logger_base()):  # type: ignore[misc]
    """LiteLLM proxy callback: requests for `auto_model` get the model and fallbacks tierwise chose
    (private requests: bounded retries and timeout, `private_retries` / `private_timeout_s`).

    In the proxy config: `litellm_settings: {callbacks: tierwise.gateway.litellm_router.proxy_hook}` (an
    instance built from TIERWISE_URL, TIERWISE_API_KEY, TIERWISE_TIMEOUT_SECONDS,
    TIERWISE_PRIVATE_RETRIES, TIERWISE_PRIVATE_TIMEOUT_SECONDS); see LITELLM.md.
    """

    def __init__(
        self,
        client: AsyncTierwiseClient,
        model_groups: Mapping[str, str] | None = None,
        auto_model: str = AUTO_MODEL,
        router: Any = None,
        router_getter: Callable[[], Any] = _proxy_router,
        private_retries: int = PRIVATE_RETRIES,
        private_timeout_s: float = PRIVATE_TIMEOUT_S,
        cascade: LiteLLMCascade | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.cascade = cascade  # check answers and retry one tier up through the proxy's router
        self.model_groups = dict(model_groups or {})
        if cascade is not None:  # its retries follow the chains this hook builds
            cascade.use_model_groups(self.model_groups)
        self.auto_model = auto_model
        self.private_retries, self.private_timeout_s = checked_private_bounds(
            private_retries, private_timeout_s
        )
        self.router = router
        self.router_getter = router_getter

    @staticmethod
    def _unrouted(data: dict[str, Any]) -> dict[str, Any]:
        """A request the hook does not route, without a client's own `tierwise` metadata: only this
        hook speaks for tierwise, and such metadata would have the post-call hook cascade a request
        tierwise never routed (to groups of the client's choosing)."""
        metadata = data.get("metadata")
        if isinstance(metadata, dict) and "tierwise" in metadata:
            metadata.pop("tierwise")
        return data

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: str
    ) -> dict[str, Any]:
        if data.get("model") != self.auto_model or str(call_type) not in ROUTED_CALL_TYPES:
            return self._unrouted(data)
        text, messages, fields = classify_input(data)
        if text is None and messages is None:
            logger.warning(
                "tierwise: request for %s has no messages or prompt; left unchanged", self.auto_model
            )
            return self._unrouted(data)
        metadata = data.get("metadata") or {}
        route = metadata.get("tierwise_route") if isinstance(metadata, Mapping) else None
        routing = await self.client.classify(text=text, messages=messages, route=route, **fields)
        router = self.router or self.router_getter()
        known = router_model_groups(router) if router is not None else None
        chain, fields = routed_chain(
            routing, known, self.model_groups, self.client, data, self.private_retries, self.private_timeout_s
        )
        data["model"] = chain[0]
        data.update(fields)
        data["metadata"] = annotate(metadata if isinstance(metadata, Mapping) else None, routing, chain)
        # LiteLLM stamps the client's model name (`tierwise`) on the response unless asked for the
        # raw name; `async_post_call_success_hook` then names the group that answered.
        data["metadata"][_RAW_MODEL_NAME_KEY] = True
        if self.cascade is not None:  # how the answer will be checked (a stream's header says it)
            record_outcome(data["metadata"], None, self.cascade.mode(data))
        return data

    def _private_check(self, data: Mapping[str, Any]) -> Callable[[], Awaitable[bool]]:
        """Whether a routed request is private: its decision says so, or (asked only before a retry
        or the judge, in case the metadata was not the hook's own) the local privacy rule finds
        personal data in it, scanning a large request off the event loop. A private request is never
        retried to another tier."""

        async def private() -> bool:
            meta = data.get("metadata") or {}
            tierwise = meta.get("tierwise") if isinstance(meta, Mapping) else None
            reasons = tierwise.get("reasons") or () if isinstance(tierwise, Mapping) else ()
            tier = tierwise.get("tier") if isinstance(tierwise, Mapping) else None
            if PRIVATE_DATA in reasons or tier == self.client.upward.private_tier:
                return True
            text, messages = request_messages(data)
            strings = request_strings(text, messages, **scanned_fields(data))
            return bool(await detect_private_data_async(strings))

        return private

    async def _cascade(self, data: dict[str, Any], response: Any) -> Any:
        if self.cascade is None:
            return response
        router = self.router or self.router_getter()
        if router is None:
            return response
        metadata = data.get("metadata") or {}
        route = metadata.get("tierwise_route") if isinstance(metadata, Mapping) else None
        return await after_call(self.cascade, router, data, response, self._private_check(data), route)

    async def async_post_call_response_headers_hook(
        self,
        data: dict[str, Any],
        user_api_key_dict: Any,
        response: Any,
        request_headers: dict[str, str] | None = None,
        litellm_call_info: dict[str, Any] | None = None,
    ) -> dict[str, str] | None:
        """`x-tierwise-cascade`: the tiers tried and why (a stream: how it is checked)."""
        return cascade_headers(data.get("metadata") or {}) or None

    async def async_post_call_streaming_iterator_hook(
        self, user_api_key_dict: Any, response: Any, request_data: dict[str, Any]
    ) -> AsyncIterator[Any]:
        """A routed stream asking for JSON or tools is buffered, checked and retried (see
        cascade_litellm.py); every other stream passes through as it comes."""
        metadata = request_data.get("metadata")
        if self.cascade is None or not isinstance(metadata, Mapping) or "tierwise" not in metadata:
            async for chunk in response:
                yield chunk
            return
        stream = await self._cascade(request_data, response)
        async for chunk in stream:
            yield chunk

    async def async_post_call_success_hook(
        self, data: dict[str, Any], user_api_key_dict: Any, response: Any
    ) -> Any:
        """`response.model` = the model group that answered (after fallbacks), for routed requests."""
        metadata = data.get("metadata")
        if not isinstance(metadata, Mapping) or "tierwise" not in metadata:
            return response
        response = await self._cascade(data, response)
        hidden = getattr(response, "_hidden_params", None) or {}
        headers = hidden.get("additional_headers") or {} if isinstance(hidden, Mapping) else {}
        group = headers.get("x-litellm-model-group") or data.get("model")
        if isinstance(group, str) and hasattr(response, "model"):
            try:
                response.model = group
            except (AttributeError, TypeError, ValueError):  # a response type without a settable model
                logger.debug("tierwise: could not set response.model on %s", type(response).__name__)
        return response


def proxy_hook_from_environment() -> TierwiseProxyHook:
    """The hook the proxy config names, configured by TIERWISE_URL / TIERWISE_API_KEY / TIERWISE_TIMEOUT_SECONDS
    (and TIERWISE_POLICY_FILE for the fail-upward tier; TIERWISE_PRIVATE_RETRIES /
    TIERWISE_PRIVATE_TIMEOUT_SECONDS for how long a private request may take to fail closed)."""
    import os
    from pathlib import Path

    policy = os.environ.get("TIERWISE_POLICY_FILE")
    policy_file = Path(policy) if policy else None
    client = AsyncTierwiseClient(
        base_url=os.environ.get("TIERWISE_URL", "http://127.0.0.1:8000"),
        timeout=float(os.environ.get("TIERWISE_TIMEOUT_SECONDS", "0.25")),
        api_key=os.environ.get("TIERWISE_API_KEY") or None,
        policy_file=policy_file,
    )
    return TierwiseProxyHook(
        client,
        private_retries=int(os.environ.get("TIERWISE_PRIVATE_RETRIES", str(PRIVATE_RETRIES))),
        private_timeout_s=float(os.environ.get("TIERWISE_PRIVATE_TIMEOUT_SECONDS", str(PRIVATE_TIMEOUT_S))),
        cascade=LiteLLMCascade.from_policy(policy_file, client, prometheus=True),  # the policy's `cascade:`
    )


def __getattr__(name: str) -> Any:
    """`tierwise.gateway.litellm_router.proxy_hook` is built on first use (the proxy imports it by name)."""
    if name == "proxy_hook":
        hook = proxy_hook_from_environment()
        globals()["proxy_hook"] = hook
        return hook
    raise AttributeError(name)
