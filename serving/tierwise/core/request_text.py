"""What the classifier reads from a request: the task first, then a short sketch of its context.

Real apps wrap every request in the same system prompt, tool definitions and earlier turns. The
classifier must judge the task (the last user turn), not the wrapper, so a request becomes a
`ClassifierInput`: the task, and a sketch of the context (structural signals in words, then the
previous user turn, the system prompt's opening and the tool names). `tierwise.core.text_encoding`
gives the task a guaranteed token budget and the sketch what is left. The full conversation text
is kept for what needs every word of the messages: the long-context token count, the log.

What the privacy rule reads is wider: `request_strings`, every string a request carries (content and
content parts, tool-call names and arguments, tool results, `tools` and legacy `functions`
definitions, `response_format` and its JSON schema, `name` fields), since all of it reaches the model.
The service, the CLI, the audit and the gateway all scan that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

CONTEXT_ROLES = ("system", "developer")
TEXT_PART_TYPES = ("text", "input_text")
# Characters of each context piece put in the sketch: the encoder keeps at most the manifest's
# `context_tokens` of the sketch anyway (32 in today's models), so more would only cost tokenizing time.
SKETCH_CHARS = {"previous": 700, "system": 500}


class RequestTextError(ValueError):
    """The request has no usable text; the message names the field."""


@dataclass(frozen=True)
class ClassifierInput:
    """One request as the classifier reads it. Hashable: it is the key of what was decided."""

    task: str  # the last user turn: what the request asks for
    sketch: str = ""  # the context in brief: signals, previous user turn, system prompt, tools
    full_text: str = ""  # every message's text, context first ("" when it is the task alone)
    # Every string the request carries (`request_strings`), for the privacy rule; "" when that is `text`.
    # Not part of equality: the scores depend on what the encoder reads, not on this.
    strings: str = field(default="", compare=False)

    @classmethod
    def plain(cls, text: str) -> ClassifierInput:
        """A bare prompt: no context."""
        return cls(task=text)

    @property
    def text(self) -> str:
        """Every word of the messages' content (token count, logs)."""
        return self.full_text or self.task

    @property
    def privacy_text(self) -> str:
        """What the privacy rule scans: every string of the request, tool calls and tools included."""
        return self.strings or self.text


def content_text(content: Any) -> str:
    """OpenAI `content` is a string or a list of parts ({"type": "text", "text": ...})."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = [
            p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") in TEXT_PART_TYPES
        ]
        return "\n".join(str(p) for p in parts)
    raise RequestTextError("message 'content' must be a string or a list of content parts")


def attachment_count(content: Any) -> int:
    """Non-text content parts (images, files, audio) in one message."""
    if isinstance(content, Sequence) and not isinstance(content, str):
        return sum(1 for p in content if isinstance(p, Mapping) and p.get("type") not in TEXT_PART_TYPES)
    return 0


def last_user_index(messages: Sequence[Mapping[str, Any]]) -> int:
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    return users[-1] if users else len(messages) - 1


def conversation_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """Every message's text in one string: preceding context first, the last user turn last."""
    if not messages:
        raise RequestTextError("'messages' must hold at least one message")
    texts = [content_text(m.get("content")) for m in messages]
    last_user = last_user_index(messages)
    context = [t for i, t in enumerate(texts) if i != last_user and t.strip()]
    final = texts[last_user]
    if not (final.strip() or context):
        raise RequestTextError("'messages' hold no text content")
    return "\n\n".join([*context, final]) if context else final


def size_word(words: int) -> str:
    """A length bucket in words a tokenizer keeps whole (the model reads no digits reliably)."""
    for limit, word in ((50, "short"), (300, "medium"), (1000, "long")):
        if words < limit:
            return word
    return "very long"


def tool_names(messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] | None) -> list[str]:
    """Names of the tools offered (`tools`) or called (`tool_calls`), in first-seen order."""
    names: list[str] = []
    declared = [t.get("function", t) for t in tools or [] if isinstance(t, Mapping)]
    called = [
        c.get("function", {}) for m in messages for c in (m.get("tool_calls") or []) if isinstance(c, Mapping)
    ]
    for spec in [*declared, *called]:
        name = spec.get("name") if isinstance(spec, Mapping) else None
        if isinstance(name, str) and name and name not in names:
            names.append(name)
    return names


def context_signals(
    messages: Sequence[Mapping[str, Any]], last_user: int, tools: Sequence[Any] | None
) -> str:
    """Structural facts about the context, in words: they survive any truncation of the sketch."""
    texts = [content_text(m.get("content")) for m in messages]
    system_words = sum(
        len(t.split()) for m, t in zip(messages, texts, strict=True) if m.get("role") in CONTEXT_ROLES
    )
    earlier_users = sum(1 for i, m in enumerate(messages) if m.get("role") == "user" and i != last_user)
    tool_results = sum(1 for m in messages if m.get("role") in ("tool", "function"))
    attachments = sum(attachment_count(m.get("content")) for m in messages)
    names = tool_names(messages, tools)
    signals = [f"system prompt {size_word(system_words)}" if system_words else "no system prompt"]
    signals.append(f"earlier turns {min(earlier_users, 5)}" if earlier_users else "first turn")
    if names:
        signals.append(f"tools {' '.join(names[:8])}")
    if tool_results:
        signals.append("tool results")
    if attachments:
        signals.append("attachments")
    if any("```" in t for i, t in enumerate(texts) if i != last_user):
        signals.append("code in context")
    return "; ".join(signals)


def context_sketch(messages: Sequence[Mapping[str, Any]], last_user: int, tools: Sequence[Any] | None) -> str:
    """Signals, then the previous user turn (a follow-up's subject), then the system prompt's head."""
    previous = [
        content_text(m.get("content"))
        for i, m in enumerate(messages)
        if m.get("role") == "user" and i < last_user
    ]
    system = [content_text(m.get("content")) for m in messages if m.get("role") in CONTEXT_ROLES]
    pieces = [context_signals(messages, last_user, tools)]
    if previous and previous[-1].strip():
        pieces.append("previous: " + previous[-1].strip()[: SKETCH_CHARS["previous"]])
    if system and system[0].strip():
        pieces.append("system: " + " ".join(s.strip() for s in system)[: SKETCH_CHARS["system"]])
    return " | ".join(pieces)


def conversation_input(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] | None = None
) -> ClassifierInput:
    full_text = conversation_text(messages)  # raises for an empty conversation
    last_user = last_user_index(messages)
    task = content_text(messages[last_user].get("content"))
    if len(messages) == 1 and not tools:
        return ClassifierInput.plain(task)
    return ClassifierInput(task=task, sketch=context_sketch(messages, last_user, tools), full_text=full_text)


def _checked_messages(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    messages = record["messages"]
    if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
        raise RequestTextError("'messages' must be a list of {role, content} objects")
    return messages


def _checked_text(record: Mapping[str, Any]) -> str:
    if not isinstance(record["text"], str):
        raise RequestTextError("'text' must be a string")
    if not record["text"].strip():
        raise RequestTextError("'text' is empty")
    return record["text"]


# What reaches the model, beside the routing fields (route, metadata, min/max tier), which never do.
PRIVACY_SCANNED_FIELDS = ("text", "messages", "tools", "functions", "response_format")


def request_strings(record: Mapping[str, Any]) -> str:
    """Every string a request carries, one per line: what the privacy rule reads.

    `record` is a request body (`text`, or `messages` with optional `tools`, legacy `functions` and
    `response_format`). Every string at any depth of those fields counts: message content and content
    parts, `name` fields, tool-call names and their JSON `arguments`, tool results, the `tools` and
    `functions` definitions, the response format's name, description and JSON schema. Dict keys are
    field names the client chose, not data, and are left out; so are `route` and `metadata`, which
    never reach a model.
    """
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

    for name in PRIVACY_SCANNED_FIELDS:
        collect(record.get(name))
    return "\n".join(out)


def request_input(record: Mapping[str, Any]) -> ClassifierInput:
    """What the classifier reads from a JSONL row or request body with `text` or `messages`
    (and optionally OpenAI `tools`), with every string of it kept for the privacy rule."""
    if record.get("text") is not None:
        return ClassifierInput.plain(_checked_text(record))
    if record.get("messages") is not None:
        tools = record.get("tools")
        if tools is not None and not isinstance(tools, list):
            raise RequestTextError("'tools' must be a list of tool definitions")
        read = conversation_input(_checked_messages(record), tools)
        strings = request_strings(record)
        return read if strings == read.text else replace(read, strings=strings)
    raise RequestTextError("row needs a 'text' string or a 'messages' list")


def record_text(record: Mapping[str, Any]) -> str:
    """Every word of a JSONL row or request body with `text` or `messages`."""
    return request_input(record).text
