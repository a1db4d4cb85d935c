"""A Python client for the tierwise service (sync and async), for gateways and applications.

    from tierwise.gateway.client import TierwiseClient
    client = TierwiseClient("http://127.0.0.1:8000", timeout=0.25)
    routing = client.classify(messages=[{"role": "user", "content": "Prove that ..."}])
    routing.model, routing.fallbacks        # call these, in order
    client.feedback(routing.request_id, needed_tier="frontier", source="retry")

Fail upward: when the service errors (5xx, a refused connection, a bad answer) or does not answer
within `timeout` seconds, `classify` returns the top tier's models with `failed_upward=True` and the
reason in `error`, so the caller always has a model to call and never pays in quality for an outage.
The top tier comes from the policy file (`policy_file`, default: the packaged policy) unless
`upward_tier` and `upward_models` are given. A 4xx (the request itself is wrong, or the API key)
also fails upward and is logged; pass `strict=True` to raise `TierwiseRequestError` instead.

Privacy first: before any fallback the client applies the policy's privacy rule itself (the same
detectors as the service, serving/tierwise/core/privacy.py, over every string of the request). A request with
personal data or secrets goes to the policy's `private_tier` (or `private_tier`/`private_models`
given here), never to the public top tier; with no private tier configured, `classify` raises
`PrivateDataUnroutableError` (fail closed), so no outage or overload can send personal data to a
third party.

It needs httpx and python-stdnum (`pip install 'tierwise[gateway]'`), not the service's packages. The
wire format is in wire.py, the fail-upward route in upward.py; `Routing` and the errors are importable
from here, the module gateways use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from tierwise.core.privacy import detect_private_data, detect_private_data_async
from tierwise.gateway.upward import failed_upward, request_strings, upward_route
from tierwise.gateway.wire import (
    PrivateDataUnroutableError,
    Routing,
    TierwiseRequestError,
    TierwiseUnavailableError,
    classify_payload,
    error_detail,
    feedback_payload,
    feedback_result,
    headers,
    routing_from_response,
)

logger = logging.getLogger("tierwise.client")

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_SECONDS = 0.25

__all__ = [
    "AsyncTierwiseClient",
    "PrivateDataUnroutableError",
    "Routing",
    "TierwiseClient",
    "TierwiseRequestError",
    "TierwiseUnavailableError",
]


class _ClientBase:
    """What the blocking and the async client share: their settings, the fail-upward route, reading answers."""

    def __init__(
        self,
        base_url: str,
        timeout: float,
        api_key: str | None,
        policy_file: Path | None,
        upward_tier: str | None,
        upward_models: Sequence[str] | None,
        strict: bool,
        private_tier: str | None = None,
        private_models: Sequence[str] | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.api_key = api_key
        self.strict = strict
        self.upward = upward_route(
            policy_file, upward_tier, upward_models, private_tier=private_tier, private_models=private_models
        )

    def failure_reason(self, response: httpx.Response) -> tuple[Routing | None, str]:
        """(the routing, None) for a usable answer, else (None, why it failed upward); raises
        TierwiseRequestError for a 4xx in strict mode."""
        if response.status_code == 200:
            try:
                return routing_from_response(response), ""
            except (ValueError, KeyError, TypeError) as err:
                return None, f"unreadable answer ({type(err).__name__}: {err})"
        error_type, message, field_name = error_detail(response)
        if 400 <= response.status_code < 500:
            if self.strict:
                raise TierwiseRequestError(response.status_code, error_type, message, field_name)
            if response.status_code in (401, 403):
                logger.error("tierwise refused the API key (%s): %s", error_type, message)
        return None, f"HTTP {response.status_code} {error_type}: {message}"


class TierwiseClient(_ClientBase):
    """Blocking client; reuse one instance (it keeps a connection pool). Use as a context manager."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        api_key: str | None = None,
        policy_file: Path | None = None,
        upward_tier: str | None = None,
        upward_models: Sequence[str] | None = None,
        strict: bool = False,
        transport: httpx.BaseTransport | None = None,
        private_tier: str | None = None,
        private_models: Sequence[str] | None = None,
    ) -> None:
        super().__init__(
            base_url,
            timeout,
            api_key,
            policy_file,
            upward_tier,
            upward_models,
            strict,
            private_tier,
            private_models,
        )
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def classify(
        self,
        text: str | None = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
        min_tier: str | None = None,
        max_tier: str | None = None,
        route: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> Routing:
        payload = classify_payload(text, messages, min_tier, max_tier, route, metadata, tools)
        try:
            response = self._http.post("/classify", json=payload, headers=headers(self.api_key, request_id))
        except httpx.TimeoutException:
            reason = f"no answer within {self.timeout:g} s"
        except httpx.HTTPError as err:
            reason = f"{type(err).__name__}: {err}"
        else:
            routing, reason = self.failure_reason(response)
            if routing is not None:
                return routing
        kinds = detect_private_data(request_strings(text, messages, tools))  # the privacy rule, locally
        return failed_upward(self.upward, reason, request_id, kinds)

    def feedback(
        self,
        request_id: str,
        needed_tier: str | None = None,
        passed: bool | None = None,
        source: str | None = None,
    ) -> dict[str, Any]:
        """Report an outcome; raises TierwiseRequestError (4xx) or TierwiseUnavailableError."""
        payload = feedback_payload(request_id, needed_tier, passed, source)
        try:
            response = self._http.post("/feedback", json=payload, headers=headers(self.api_key, None))
        except httpx.HTTPError as err:
            raise TierwiseUnavailableError(f"feedback not delivered ({type(err).__name__}: {err})") from err
        return feedback_result(response)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TierwiseClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncTierwiseClient(_ClientBase):
    """The asyncio client, same behaviour as `TierwiseClient`."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        api_key: str | None = None,
        policy_file: Path | None = None,
        upward_tier: str | None = None,
        upward_models: Sequence[str] | None = None,
        strict: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        private_tier: str | None = None,
        private_models: Sequence[str] | None = None,
    ) -> None:
        super().__init__(
            base_url,
            timeout,
            api_key,
            policy_file,
            upward_tier,
            upward_models,
            strict,
            private_tier,
            private_models,
        )
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)

    async def classify(
        self,
        text: str | None = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
        min_tier: str | None = None,
        max_tier: str | None = None,
        route: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> Routing:
        payload = classify_payload(text, messages, min_tier, max_tier, route, metadata, tools)
        try:
            response = await asyncio.wait_for(  # a total deadline, not only per connect/read phase
                self._http.post("/classify", json=payload, headers=headers(self.api_key, request_id)),
                timeout=self.timeout,
            )
        except (httpx.TimeoutException, TimeoutError):
            reason = f"no answer within {self.timeout:g} s"
        except httpx.HTTPError as err:
            reason = f"{type(err).__name__}: {err}"
        else:
            routing, reason = self.failure_reason(response)
            if routing is not None:
                return routing
        # The privacy rule, locally; a large request is scanned off the event loop.
        kinds = await detect_private_data_async(request_strings(text, messages, tools))
        return failed_upward(self.upward, reason, request_id, kinds)

    async def feedback(
        self,
        request_id: str,
        needed_tier: str | None = None,
        passed: bool | None = None,
        source: str | None = None,
    ) -> dict[str, Any]:
        payload = feedback_payload(request_id, needed_tier, passed, source)
        try:
            response = await self._http.post("/feedback", json=payload, headers=headers(self.api_key, None))
        except httpx.HTTPError as err:
            raise TierwiseUnavailableError(f"feedback not delivered ({type(err).__name__}: {err})") from err
        return feedback_result(response)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncTierwiseClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
