"""What tierwise reads of a LiteLLM request body: the text or chat messages to classify, and what
else of it reaches the model and may carry personal data (tools, legacy functions, a JSON schema),
so the privacy rule scans it too. Used by the LiteLLM router and proxy hook (litellm_router.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any


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


ROUTE_KEY = "tierwise_route"  # metadata key a caller sets to name its route


def proxy_route(metadata: Any, user_api_key: Any) -> str | None:
    """The route (segment) of a proxied request: the caller's `metadata.tierwise_route`, else who calls:
    the LiteLLM virtual key's team (`team:<alias or id>`), else the key (`key:<12 hex digits of a hash
    of its alias>`: key aliases are often people's e-mail addresses, which must not reach logs, metrics
    or reports), so each app behind the proxy is its own segment without sending anything."""
    if isinstance(metadata, Mapping) and isinstance(metadata.get(ROUTE_KEY), str) and metadata[ROUTE_KEY]:
        return str(metadata[ROUTE_KEY])
    for attribute in ("team_alias", "team_id"):
        value = getattr(user_api_key, attribute, None)
        if isinstance(value, str) and value:
            return f"team:{value}"[:200]
    alias = getattr(user_api_key, "key_alias", None)
    if isinstance(alias, str) and alias:
        return f"key:{hashlib.sha256(alias.encode()).hexdigest()[:12]}"
    return None


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
