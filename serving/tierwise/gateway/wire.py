"""The HTTP contract between the clients and the service: request payloads, headers, and reading
answers and errors into `Routing` or an exception. No I/O: the clients in client.py send and receive."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True)
class Routing:
    """Which model to call: `model` first, then `fallbacks` in order."""

    tier: str
    model: str
    fallbacks: tuple[str, ...]
    request_id: str | None = None
    model_version: str | None = None
    confidence: float | None = None
    complexity_tier: str | None = None  # the public tier the request needs (for a private request too)
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


def classify_payload(
    text: str | None,
    messages: Sequence[Mapping[str, Any]] | None,
    min_tier: str | None,
    max_tier: str | None,
    route: str | None,
    metadata: Mapping[str, Any] | None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    functions: Sequence[Mapping[str, Any]] | None = None,
    response_format: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    if (text is None) == (messages is None):
        raise ValueError("pass exactly one of text= or messages=")
    for name, given in (("tools", tools), ("functions", functions), ("response_format", response_format)):
        if given is not None and messages is None:
            raise ValueError(f"{name}= go with messages= (an OpenAI chat request), not with text=")
    payload: dict[str, Any] = (
        {"text": text} if text is not None else {"messages": [dict(m) for m in messages or []]}
    )
    if tools:  # the service scans them for private data and reads their names
        payload["tools"] = [dict(t) for t in tools]
    if functions:  # legacy tools: scanned for private data
        payload["functions"] = [dict(f) for f in functions]
    if response_format:  # its JSON schema reaches the model too: scanned for private data
        payload["response_format"] = dict(response_format)
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


def error_detail(response: httpx.Response) -> tuple[str, str, str | None]:
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
        complexity_tier=body.get("complexity_tier"),
        predicted_tier=body.get("predicted_tier"),
        reasons=tuple(body.get("reasons", [])),
        raw=body,
    )


def feedback_payload(
    request_id: str,
    needed_tier: str | None,
    passed: bool | None,
    source: str | None,
    tier: str | None = None,
    reason: str | None = None,
    evidence: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """POST /feedback's body; `tier` (the tier whose answer it is about), `reason` and `evidence` are
    what a cascade reports of each failed check."""
    if (needed_tier is None) == (passed is None):
        raise ValueError("pass exactly one of needed_tier= or passed=")
    outcome: dict[str, Any] = {"needed_tier": needed_tier} if needed_tier is not None else {"passed": passed}
    payload: dict[str, Any] = {"request_id": request_id, "outcome": outcome}
    for key, value in (("source", source), ("tier", tier), ("reason", reason)):
        if value:
            payload[key] = value
    if evidence:
        payload["evidence"] = dict(evidence)
    return payload


def feedback_result(response: httpx.Response) -> dict[str, Any]:
    if response.status_code == 200:
        return dict(response.json())
    error_type, message, field_name = error_detail(response)
    if 400 <= response.status_code < 500:
        raise TierwiseRequestError(response.status_code, error_type, message, field_name)
    raise TierwiseUnavailableError(f"tierwise answered {response.status_code} {error_type}: {message}")
