"""The entries of a wrapper library file and how each is read: system prompts (with their blocks,
passages and tools), snippets (format rules, few-shot headers, follow-ups, acknowledgements) and earlier
turns. tierwise.training.wrappers assembles them into a `WrapperLibrary` and wraps tasks with them.

Every reader raises KeyError or ValueError naming the entry; `WrapperLibrary.load` adds the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TASK_SLOT = "{task}"

Message = dict[str, Any]


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    text: str

    def render(self, number: int) -> str:
        return f"[{number}] {self.title}\n{self.text}"


@dataclass(frozen=True)
class SystemPrompt:
    """One app's system prompt; RAG prompts keep their passages apart so they can move to a user turn."""

    id: str
    app: str
    instruction: str
    passages: tuple[Passage, ...] = ()
    tools: tuple[dict[str, Any], ...] = ()

    @property
    def text(self) -> str:
        if not self.passages:
            return self.instruction
        return f"{self.instruction}\n\n{passages_text(self.passages)}"


@dataclass(frozen=True)
class Snippet:
    id: str
    text: str
    position: str = "after"  # format rules: "after" or "before" the task


@dataclass(frozen=True)
class History:
    id: str
    kind: str  # "chat" or "tools"
    messages: tuple[Message, ...]

    def tool_names(self) -> frozenset[str]:
        calls = [c for m in self.messages for c in m.get("tool_calls") or []]
        return frozenset(c["function"]["name"] for c in calls)


def passages_text(passages: Sequence[Passage]) -> str:
    return "\n\n".join(p.render(i) for i, p in enumerate(passages, start=1))


def parse_tool(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    function = {"name": name, "description": spec["description"].strip(), "parameters": spec["parameters"]}
    return {"type": "function", "function": function}


def lookup(table: Mapping[str, Any], key: str, what: str, owner: str) -> Any:
    if key not in table:
        raise ValueError(f"{owner} names {what} {key!r}, which the file does not define")
    return table[key]


def parse_system_prompt(
    entry: Mapping[str, Any],
    blocks: Mapping[str, str],
    passages: Mapping[str, Passage],
    tools: Mapping[str, dict[str, Any]],
) -> SystemPrompt:
    owner = f"system prompt {entry['id']!r}"
    pieces = [entry["text"].strip()] if entry.get("text") else []
    pieces += [lookup(blocks, b, "block", owner).strip() for b in entry.get("blocks") or []]
    if not pieces:
        raise ValueError(f"{owner} needs 'text' or 'blocks'")
    return SystemPrompt(
        id=entry["id"],
        app=entry["app"],
        instruction="\n\n".join(pieces),
        passages=tuple(lookup(passages, p, "passage", owner) for p in entry.get("passages") or []),
        tools=tuple(lookup(tools, t, "tool", owner) for t in entry.get("tools") or []),
    )


def parse_snippet(entry: Mapping[str, Any]) -> Snippet:
    position = entry.get("position", "after")
    if position not in ("after", "before"):
        raise ValueError(f"{entry['id']!r}: position must be 'after' or 'before'")
    return Snippet(id=entry["id"], text=entry["text"].strip(), position=position)


def parse_few_shot_header(entry: Mapping[str, Any]) -> Snippet:
    header = parse_snippet(entry)
    if header.text.count(TASK_SLOT) != 1:
        raise ValueError(f"few-shot header {header.id!r} must hold {TASK_SLOT} exactly once")
    return header


def parse_history(entry: Mapping[str, Any]) -> History:
    kind = entry["kind"]
    if kind not in ("chat", "tools"):
        raise ValueError(f"history {entry['id']!r}: kind must be 'chat' or 'tools'")
    messages = tuple(parse_history_message(m) for m in entry["messages"])
    if not messages or messages[-1]["role"] not in ("assistant", "tool"):
        raise ValueError(f"history {entry['id']!r} must end with an assistant or tool message")
    if any(m["role"] not in ("user", "assistant", "tool") for m in messages):
        raise ValueError(f"history {entry['id']!r} may hold only user, assistant and tool messages")
    return History(id=entry["id"], kind=kind, messages=messages)


def parse_history_message(raw: Mapping[str, Any]) -> Message:
    """YAML writes tool-call arguments as mappings; OpenAI sends them as a JSON string."""
    message: Message = {"role": raw["role"], "content": raw.get("content")}
    if raw.get("tool_calls"):
        message["tool_calls"] = [parse_tool_call(c) for c in raw["tool_calls"]]
    if raw["role"] == "tool":
        message["tool_call_id"] = raw["tool_call_id"]
    return message


def parse_tool_call(raw: Mapping[str, Any]) -> dict[str, Any]:
    arguments = json.dumps(raw.get("arguments") or {}, ensure_ascii=False)
    return {"id": raw["id"], "type": "function", "function": {"name": raw["name"], "arguments": arguments}}
