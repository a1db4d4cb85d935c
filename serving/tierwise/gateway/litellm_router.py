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
closed fast (litellm_chain.py): it carries `num_retries` = `private_retries` (default 0) and
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
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
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
from tierwise.gateway.litellm_chain import (
    PRIVATE_RETRIES,
    PRIVATE_TIMEOUT_S,
    annotate,
    checked_private_bounds,
    is_private,
    routed_chain,
    router_model_groups,
)
from tierwise.gateway.litellm_request import (
    ROUTE_KEY,
    classify_input,
    proxy_route,
    request_messages,
    scanned_fields,
)
from tierwise.gateway.upward import request_strings
from tierwise.gateway.wire import Routing

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
        route = kwargs.pop(ROUTE_KEY, None)
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
        route = kwargs.pop(ROUTE_KEY, None)
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
        route = proxy_route(metadata, user_api_key_dict)
        routing = await self.client.classify(text=text, messages=messages, route=route, **fields)
        router = self.router or self.router_getter()
        known = router_model_groups(router) if router is not None else None
        chain, fields = routed_chain(
            routing, known, self.model_groups, self.client, data, self.private_retries, self.private_timeout_s
        )
        data["model"] = chain[0]
        data.update(fields)
        data["metadata"] = annotate(metadata if isinstance(metadata, Mapping) else None, routing, chain)
        if route is not None:  # the cascade's feedback names the same route
            data["metadata"][ROUTE_KEY] = route
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
        route = metadata.get(ROUTE_KEY) if isinstance(metadata, Mapping) else None
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
