"""What the classifier reads from a request: plain text, or an OpenAI-style conversation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class RequestTextError(ValueError):
    """The request has no usable text; the message names the field."""


def content_text(content: Any) -> str:
    """OpenAI `content` is a string or a list of parts ({"type": "text", "text": ...})."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = [p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text"]
        return "\n".join(str(p) for p in parts)
    raise RequestTextError("message 'content' must be a string or a list of content parts")


def conversation_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """Text for the classifier: preceding context first, the last user turn last.

    Head+tail truncation keeps the end of the text, so the last user turn always survives and
    as much preceding context as fits is kept ahead of it.
    """
    if not messages:
        raise RequestTextError("'messages' must hold at least one message")
    texts = [content_text(m.get("content")) for m in messages]
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=len(messages) - 1)
    context = [t for i, t in enumerate(texts) if i != last_user and t.strip()]
    final = texts[last_user]
    if not (final.strip() or context):
        raise RequestTextError("'messages' hold no text content")
    return "\n\n".join([*context, final]) if context else final


def record_text(record: Mapping[str, Any]) -> str:
    """The text of a JSONL row or request body with `text` or `messages`."""
    if "text" in record and record["text"] is not None:
        if not isinstance(record["text"], str):
            raise RequestTextError("'text' must be a string")
        if not record["text"].strip():
            raise RequestTextError("'text' is empty")
        return record["text"]
    if "messages" in record and record["messages"] is not None:
        messages = record["messages"]
        if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
            raise RequestTextError("'messages' must be a list of {role, content} objects")
        return conversation_text(messages)
    raise RequestTextError("row needs a 'text' string or a 'messages' list")
