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
detectors as the service, serving/tierwise/core/privacy.py, over every string of the request: its
messages, `tools`, legacy `functions` and `response_format`, which `classify` takes for that and
sends to the service, which scans the same; so a gateway passes them all). A request with
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
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
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
# The async client replaces its connection pool when, for this long, requests only timed out waiting
# for a connection: max(POOL_STALL_MIN_SECONDS, POOL_STALL_TIMEOUTS x timeout), 5 s by default.
POOL_STALL_MIN_SECONDS = 5.0
POOL_STALL_TIMEOUTS = 20
# The async client's requests to tierwise at once (its connection pool's size); past it, a caller
# waits for one to end, within its timeout, and then fails upward without sending anything.
MAX_IN_FLIGHT = 100

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
        functions: Sequence[Mapping[str, Any]] | None = None,
        response_format: Mapping[str, Any] | None = None,
    ) -> Routing:
        """The routing of a request: `text`, or `messages` with what else of the chat request reaches
        the model (`tools`, legacy `functions`, `response_format`), all scanned by the privacy rule."""
        payload = classify_payload(
            text, messages, min_tier, max_tier, route, metadata, tools, functions, response_format
        )
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
        strings = request_strings(text, messages, tools, functions, response_format)
        kinds = detect_private_data(strings)  # the privacy rule, locally
        return failed_upward(self.upward, reason, request_id, kinds)

    def feedback(
        self,
        request_id: str,
        needed_tier: str | None = None,
        passed: bool | None = None,
        source: str | None = None,
        tier: str | None = None,
        reason: str | None = None,
        evidence: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Report an outcome; raises TierwiseRequestError (4xx) or TierwiseUnavailableError. `tier`:
        the tier whose answer it is about (default: the served one), with `reason` and `evidence`."""
        payload = feedback_payload(request_id, needed_tier, passed, source, tier, reason, evidence)
        try:
            response = self._http.post("/feedback", json=payload, headers=headers(self.api_key, None))
        except httpx.HTTPError as err:
            raise TierwiseUnavailableError(f"feedback not delivered ({type(err).__name__}: {err})") from err
        return feedback_result(response)

    def complete(
        self,
        call: Callable[[str, dict[str, Any]], Any],
        cascade: Any = None,
        route: str | None = None,
        **body: Any,
    ) -> tuple[Any, Routing, Any]:
        """Classify `body` (an OpenAI chat request), call the routed model with `call(model, body)` and,
        with a `cascade` (cascade_client.cascade_from_policy), check the answer and retry one tier up
        while it fails. Returns (the answer, the routing, the cascade's outcome or None)."""
        from tierwise.gateway.cascade_client import complete

        return complete(self, call, cascade, route, **body)

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
        self._transport = transport
        self._http = self._new_http()
        # At most MAX_IN_FLIGHT requests, the pool's size, so a request never queues in httpx's pool:
        # a queued request that is abandoned can leak its slot (encode/httpcore#1093), and every
        # queued request makes each pool operation slower (it scans the queue against the connections).
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        # Requests whose caller may have stopped waiting; they end on httpx's own timeouts (see classify).
        self._in_flight: set[asyncio.Task[httpx.Response]] = set()
        self._closing: set[asyncio.Task[None]] = set()  # replaced pools being closed
        self._clock: Callable[[], float] = time.monotonic
        self._pool_stalled_since: float | None = None  # first pool timeout since a request got a connection
        self.pools_replaced = 0

    def _new_http(self) -> httpx.AsyncClient:
        # Each phase (pool, connect, write, read) is bounded by the timeout, so a request left to
        # run after its caller gave up ends by itself within a few timeouts.
        return httpx.AsyncClient(
            base_url=self.base_url,
            timeout=self.timeout,
            transport=self._transport,
            limits=httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=20),
        )

    @property
    def pool_stall_seconds(self) -> float:
        """How long requests may find no connection in the pool before it is replaced. A pool that
        works frees a connection at least every connect + write + read timeout, even under overload."""
        return max(POOL_STALL_MIN_SECONDS, POOL_STALL_TIMEOUTS * self.timeout)

    def _finished(self, request: asyncio.Task[httpx.Response]) -> None:
        """Every /classify request's end: free its slot, and replace a pool that has stopped
        yielding connections (a backstop: with the slots, the pool should never make a request wait)."""
        self._in_flight.discard(request)
        self._slots.release()
        if request.cancelled():
            return
        if not isinstance(request.exception(), httpx.PoolTimeout):  # it got a connection (or an answer)
            self._pool_stalled_since = None
            return
        now = self._clock()
        if self._pool_stalled_since is None:
            self._pool_stalled_since = now
        elif now - self._pool_stalled_since >= self.pool_stall_seconds:
            self._replace_pool(now - self._pool_stalled_since)

    def _replace_pool(self, stalled_for: float) -> None:
        self._pool_stalled_since = None
        if self._transport is not None:
            # A caller's transport cannot be rebuilt, and closing it would break it for the caller.
            logger.error(
                "tierwise client: no connection from the given transport for %.1f s; it is kept as it is",
                stalled_for,
            )
            return
        logger.error(
            "tierwise client: no connection from the pool for %.1f s while requests kept timing out "
            "waiting for one; replacing the connection pool (encode/httpcore#1093)",
            stalled_for,
        )
        stale, self._http = self._http, self._new_http()
        self.pools_replaced += 1
        closing = asyncio.ensure_future(stale.aclose())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

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
        functions: Sequence[Mapping[str, Any]] | None = None,
        response_format: Mapping[str, Any] | None = None,
    ) -> Routing:
        """The routing of a request: `text`, or `messages` with what else of the chat request reaches
        the model (`tools`, legacy `functions`, `response_format`), all scanned by the privacy rule."""
        payload = classify_payload(
            text, messages, min_tier, max_tier, route, metadata, tools, functions, response_format
        )
        reason = f"no answer within {self.timeout:g} s"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            if self._slots.locked():  # waiting for a slot is cancellation-safe, unlike waiting in the pool
                await asyncio.wait_for(self._slots.acquire(), timeout=self.timeout)
            else:
                await self._slots.acquire()
        except TimeoutError:
            reason += f" ({MAX_IN_FLIGHT} requests to tierwise were already in flight)"
        else:
            # The request runs in its own task and is never cancelled from outside: after an overload
            # burst, requests cancelled by the caller's deadline had leaked every slot of httpx's pool,
            # so tierwise was never asked again. The caller still gets a total deadline; a request it
            # stops waiting for ends on httpx's own per-phase timeouts and then frees its slot.
            request = asyncio.ensure_future(
                self._http.post("/classify", json=payload, headers=headers(self.api_key, request_id))
            )
            self._in_flight.add(request)
            request.add_done_callback(self._finished)
            done, _ = await asyncio.wait({request}, timeout=max(0.0, deadline - loop.time()))
            try:
                if done:
                    routing, reason = self.failure_reason(request.result())
                    if routing is not None:
                        return routing
            except httpx.TimeoutException:
                pass  # the reason is "no answer within"
            except httpx.HTTPError as err:
                reason = f"{type(err).__name__}: {err}"
        # The privacy rule, locally; a large request is scanned off the event loop.
        strings = request_strings(text, messages, tools, functions, response_format)
        kinds = await detect_private_data_async(strings)
        return failed_upward(self.upward, reason, request_id, kinds)

    async def feedback(
        self,
        request_id: str,
        needed_tier: str | None = None,
        passed: bool | None = None,
        source: str | None = None,
        tier: str | None = None,
        reason: str | None = None,
        evidence: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        payload = feedback_payload(request_id, needed_tier, passed, source, tier, reason, evidence)
        try:
            response = await self._http.post("/feedback", json=payload, headers=headers(self.api_key, None))
        except httpx.HTTPError as err:
            raise TierwiseUnavailableError(f"feedback not delivered ({type(err).__name__}: {err})") from err
        return feedback_result(response)

    async def complete(
        self,
        call: Callable[[str, dict[str, Any]], Awaitable[Any]],
        cascade: Any = None,
        route: str | None = None,
        **body: Any,
    ) -> tuple[Any, Routing, Any]:
        """`TierwiseClient.complete` with an async `call`."""
        from tierwise.gateway.cascade_client import acomplete

        return await acomplete(self, call, cascade, route, **body)

    async def aclose(self) -> None:
        await self._http.aclose()
        # Requests left running past their callers' deadlines: the pool is closed, so cancelling
        # them can leak nothing that is still used.
        for request in list(self._in_flight):
            request.cancel()
        await asyncio.gather(*self._in_flight, *self._closing, return_exceptions=True)

    async def __aenter__(self) -> AsyncTierwiseClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
