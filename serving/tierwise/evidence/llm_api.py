"""A small async client for OpenAI-compatible chat completions (a LiteLLM gateway, vLLM, OpenAI...).

Only `POST {base_url}/chat/completions` is used, through httpx (no OpenAI SDK). 429, 5xx, timeouts
and connection errors are retried with exponential backoff and jitter (a `Retry-After` header is
honoured, capped); 401/403/404 mean the key, the URL or a model name is wrong, so they raise
`LLMConfigError` at once; other 4xx fail that call only (`LLMCallError`). httpx is imported when a
client is made, so `tierwise` itself runs without it.
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

RETRY_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504}
CONFIG_STATUSES = {401, 403, 404}
MAX_RETRY_AFTER_SECONDS = 30.0


class LLMCallError(RuntimeError):
    """One call failed for good (retries spent, or a 4xx about this request)."""


class LLMConfigError(LLMCallError):
    """The endpoint refused us in a way every call would repeat: key, URL or model name."""


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    attempts: int = 1

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Completion:
        return cls(str(value["text"]), value.get("prompt_tokens"), value.get("completion_tokens"))


@dataclass
class RetryPolicy:
    attempts: int = 5
    base_seconds: float = 0.5
    max_seconds: float = 20.0

    def delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), MAX_RETRY_AFTER_SECONDS)
            except ValueError:
                pass
        backoff = min(self.max_seconds, self.base_seconds * 2 ** (attempt - 1))
        return backoff * (0.5 + random.random() / 2)


@dataclass
class CallStats:
    retries: int = 0
    by_status: dict[str, int] = field(default_factory=dict)

    def note(self, reason: str) -> None:
        self.retries += 1
        self.by_status[reason] = self.by_status.get(reason, 0) + 1


def api_key_from_env(variable: str | None) -> str | None:
    """The API key in the named environment variable (None: no Authorization header)."""
    if not variable:
        return None
    value = os.environ.get(variable, "").strip()
    return value or None


class ChatClient:
    """`await client.complete(model, messages)`; share one per run (it pools connections)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout_seconds: float = 60.0,
        retry: RetryPolicy | None = None,
        max_connections: int = 64,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`transport`: httpx's own (None) or another, e.g. one that scripts failures in tests."""
        import httpx  # the gateway/dev extra; imported when a client is made

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.stats = CallStats()
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_seconds, connect=min(10.0, timeout_seconds)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def complete(
        self,
        model: str,
        messages: list[dict[str, Any]],
        max_tokens: int | None = None,
        temperature: float = 0.0,
    ) -> Completion:
        body: dict[str, Any] = {"model": model, "messages": messages, "temperature": temperature}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        import httpx

        for attempt in range(1, self.retry.attempts + 1):
            try:
                response = await self._http.post("/chat/completions", json=body)
            except (httpx.TimeoutException, httpx.TransportError) as err:
                reason, retry_after = type(err).__name__, None
            else:
                if response.status_code == 200:
                    return parse_completion(response, attempt)
                if response.status_code in CONFIG_STATUSES:
                    raise LLMConfigError(_status_message(response, model))
                if response.status_code not in RETRY_STATUSES:
                    raise LLMCallError(_status_message(response, model))
                reason, retry_after = str(response.status_code), response.headers.get("retry-after")
            if attempt == self.retry.attempts:
                raise LLMCallError(f"{model}: gave up after {attempt} attempts (last: {reason})")
            self.stats.note(reason)
            await asyncio.sleep(self.retry.delay(attempt, retry_after))
        raise AssertionError("unreachable")


def _status_message(response: httpx.Response, model: str) -> str:
    detail = response.text[:200].replace("\n", " ")
    hint = {
        401: "check the API key variable (--api-key-env)",
        403: "the key may not be allowed this model",
        404: "check --base-url (it usually ends in /v1) and the model name",
    }.get(response.status_code, "")
    return f"{model}: HTTP {response.status_code} from {response.request.url}{'; ' + hint if hint else ''} ({detail})"


def parse_completion(response: httpx.Response, attempts: int) -> Completion:
    try:
        payload = response.json()
        message = payload["choices"][0]["message"]
        text = message.get("content") or ""
    except (ValueError, KeyError, IndexError, TypeError) as err:
        raise LLMCallError(f"not an OpenAI chat completion ({response.text[:120]!r})") from err
    usage = payload.get("usage") or {}
    return Completion(
        str(text),
        _int_or_none(usage.get("prompt_tokens")),
        _int_or_none(usage.get("completion_tokens")),
        attempts,
    )


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
