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

This is `tierwise.client` of the issue: the distribution is `tierwise`, its packages are `serving`
and `training`, so the import path is `tierwise.gateway.client`. It needs httpx (`pip install 'tierwise[gateway]'`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tierwise.core.privacy import detect_private_data, detect_private_data_async

logger = logging.getLogger("tierwise.client")

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_SECONDS = 0.25


@dataclass(frozen=True)
class Routing:
    """Which model to call: `model` first, then `fallbacks` in order."""

    tier: str
    model: str
    fallbacks: tuple[str, ...]
    request_id: str | None = None
    model_version: str | None = None
    confidence: float | None = None
    predicted_tier: str | None = None
    reasons: tuple[str, ...] = ()
    failed_upward: bool = False  # the service was not asked successfully; this is the top tier
    error: str | None = None  # why it failed upward
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def models(self) -> tuple[str, ...]:
        return (self.model, *self.fallbacks)


class TierwiseRequestError(ValueError):
    """The service rejected the request (4xx); the message is the service's, naming the field."""

    def __init__(self, status: int, error_type: str, message: str, field_name: str | None = None) -> None:
        self.status = status
        self.error_type = error_type
        self.field_name = field_name
        super().__init__(f"tierwise answered {status} {error_type}: {message}")


class TierwiseUnavailableError(RuntimeError):
    """The service could not be reached or failed (feedback only; classify fails upward instead)."""


class PrivateDataUnroutableError(RuntimeError):
    """tierwise could not be asked, the request carries personal data or secrets, and no private
    tier is configured: the request is refused rather than sent to a public model."""


PRIVATE_DATA_REASON = "private_data"  # the policy's reason (tierwise.core.policy.PRIVATE_DATA)


@dataclass(frozen=True)
class UpwardRoute:
    tier: str
    models: tuple[str, ...]
    private_tier: str | None = None  # where requests with personal data go when tierwise cannot answer
    private_models: tuple[str, ...] = ()


def upward_route(
    policy_file: Path | None,
    upward_tier: str | None,
    upward_models: Sequence[str] | None,
    private_tier: str | None = None,
    private_models: Sequence[str] | None = None,
) -> UpwardRoute:
    """The fail-upward tier and the private tier: given here, or read from the policy file."""
    private = (private_tier, tuple(private_models)) if private_tier and private_models else None
    if upward_tier and upward_models and private is not None:
        return UpwardRoute(upward_tier, tuple(upward_models), *private)
    from tierwise.core.policy import load_policy
    from tierwise.service.settings import DEFAULT_POLICY_FILE

    policy = load_policy(policy_file or DEFAULT_POLICY_FILE)
    top = policy.tiers[-1]
    if private is None and policy.private_tier is not None:
        private = (policy.private_tier.name, policy.private_tier.models)
    private_name, private_list = private or (None, ())
    return UpwardRoute(
        upward_tier or top.name, tuple(upward_models or top.models), private_name, tuple(private_list)
    )


def request_strings(text: str | None, messages: Sequence[Mapping[str, Any]] | None) -> str:
    """Every string of a request (the text, or each message's content, parts, names, tool arguments),
    one per line: what the local privacy rule scans."""
    out: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, Mapping):
            for item in value.values():
                collect(item)
        elif isinstance(value, list | tuple):
            for item in value:
                collect(item)

    collect(text if text is not None else list(messages or []))
    return "\n".join(out)


def classify_payload(
    text: str | None,
    messages: Sequence[Mapping[str, Any]] | None,
    min_tier: str | None,
    max_tier: str | None,
    route: str | None,
    metadata: Mapping[str, Any] | None,
) -> dict[str, Any]:
    if (text is None) == (messages is None):
        raise ValueError("pass exactly one of text= or messages=")
    payload: dict[str, Any] = (
        {"text": text} if text is not None else {"messages": [dict(m) for m in messages or []]}
    )
    for key, value in (
        ("min_tier", min_tier),
        ("max_tier", max_tier),
        ("route", route),
        ("metadata", metadata),
    ):
        if value is not None:
            payload[key] = dict(value) if isinstance(value, Mapping) else value
    return payload


def headers(api_key: str | None, request_id: str | None) -> dict[str, str]:
    out = {}
    if api_key:
        out["X-API-Key"] = api_key
    if request_id:
        out["X-Request-ID"] = request_id
    return out


def _error_detail(response: httpx.Response) -> tuple[str, str, str | None]:
    try:
        error = response.json()["error"]
        return str(error.get("type", "http_error")), str(error.get("message", "")), error.get("field")
    except (ValueError, KeyError, TypeError):
        return "http_error", response.text[:200], None


def routing_from_response(response: httpx.Response) -> Routing:
    body = response.json()
    return Routing(
        tier=str(body["tier"]),
        model=str(body["model"]),
        fallbacks=tuple(str(m) for m in body.get("fallbacks", [])),
        request_id=body.get("request_id"),
        model_version=body.get("model_version"),
        confidence=body.get("confidence"),
        predicted_tier=body.get("predicted_tier"),
        reasons=tuple(body.get("reasons", [])),
        raw=body,
    )


class _Base:
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

    def failed_upward(
        self, reason: str, request_id: str | None, private_kinds: Sequence[str] = ()
    ) -> Routing:
        """The route when tierwise could not be asked: the private tier for a request with personal
        data (`private_kinds`, from the local privacy rule), else the top tier."""
        if private_kinds:
            if self.upward.private_tier is None or not self.upward.private_models:
                raise PrivateDataUnroutableError(
                    f"tierwise could not be asked ({reason}) and the request carries "
                    f"{', '.join(private_kinds)}, but no private tier is configured, so it is not sent to a "
                    "public model; add `private_tier` to the policy (TIERWISE_POLICY_FILE / policy_file=) "
                    "or pass private_tier= and private_models= to the client"
                )
            logger.warning(
                "tierwise unavailable, routing to the private tier (%s found): %s",
                ", ".join(private_kinds),
                reason,
            )
            return Routing(
                tier=self.upward.private_tier,
                model=self.upward.private_models[0],
                fallbacks=self.upward.private_models[1:],
                request_id=request_id,
                reasons=(PRIVATE_DATA_REASON,),
                failed_upward=True,
                error=reason,
            )
        logger.warning("tierwise unavailable, routing to the top tier: %s", reason)
        return Routing(
            tier=self.upward.tier,
            model=self.upward.models[0],
            fallbacks=self.upward.models[1:],
            request_id=request_id,
            failed_upward=True,
            error=reason,
        )

    def failure_reason(self, response: httpx.Response) -> tuple[Routing | None, str]:
        """(the routing, None) for a usable answer, else (None, why it failed upward); raises
        TierwiseRequestError for a 4xx in strict mode."""
        if response.status_code == 200:
            try:
                return routing_from_response(response), ""
            except (ValueError, KeyError, TypeError) as err:
                return None, f"unreadable answer ({type(err).__name__}: {err})"
        error_type, message, field_name = _error_detail(response)
        if 400 <= response.status_code < 500:
            if self.strict:
                raise TierwiseRequestError(response.status_code, error_type, message, field_name)
            if response.status_code in (401, 403):
                logger.error("tierwise refused the API key (%s): %s", error_type, message)
        return None, f"HTTP {response.status_code} {error_type}: {message}"

    @staticmethod
    def feedback_payload(
        request_id: str, needed_tier: str | None, passed: bool | None, source: str | None
    ) -> dict[str, Any]:
        if (needed_tier is None) == (passed is None):
            raise ValueError("pass exactly one of needed_tier= or passed=")
        outcome: dict[str, Any] = (
            {"needed_tier": needed_tier} if needed_tier is not None else {"passed": passed}
        )
        payload: dict[str, Any] = {"request_id": request_id, "outcome": outcome}
        if source:
            payload["source"] = source
        return payload

    @staticmethod
    def feedback_result(response: httpx.Response) -> dict[str, Any]:
        if response.status_code == 200:
            return dict(response.json())
        error_type, message, field_name = _error_detail(response)
        if 400 <= response.status_code < 500:
            raise TierwiseRequestError(response.status_code, error_type, message, field_name)
        raise TierwiseUnavailableError(f"tierwise answered {response.status_code} {error_type}: {message}")


class TierwiseClient(_Base):
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
    ) -> Routing:
        payload = classify_payload(text, messages, min_tier, max_tier, route, metadata)
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
        kinds = detect_private_data(request_strings(text, messages))  # the privacy rule, locally
        return self.failed_upward(reason, request_id, kinds)

    def feedback(
        self,
        request_id: str,
        needed_tier: str | None = None,
        passed: bool | None = None,
        source: str | None = None,
    ) -> dict[str, Any]:
        """Report an outcome; raises TierwiseRequestError (4xx) or TierwiseUnavailableError."""
        payload = self.feedback_payload(request_id, needed_tier, passed, source)
        try:
            response = self._http.post("/feedback", json=payload, headers=headers(self.api_key, None))
        except httpx.HTTPError as err:
            raise TierwiseUnavailableError(f"feedback not delivered ({type(err).__name__}: {err})") from err
        return self.feedback_result(response)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TierwiseClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncTierwiseClient(_Base):
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
    ) -> Routing:
        payload = classify_payload(text, messages, min_tier, max_tier, route, metadata)
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
        kinds = await detect_private_data_async(request_strings(text, messages))
        return self.failed_upward(reason, request_id, kinds)

    async def feedback(
        self,
        request_id: str,
        needed_tier: str | None = None,
        passed: bool | None = None,
        source: str | None = None,
    ) -> dict[str, Any]:
        payload = self.feedback_payload(request_id, needed_tier, passed, source)
        try:
            response = await self._http.post("/feedback", json=payload, headers=headers(self.api_key, None))
        except httpx.HTTPError as err:
            raise TierwiseUnavailableError(f"feedback not delivered ({type(err).__name__}: {err})") from err
        return self.feedback_result(response)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncTierwiseClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
