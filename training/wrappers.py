"""Wrap a bare task the way real apps send it: system prompts, format rules, harness headers, earlier turns.

The wrapper library is project data in `data/wrappers/{train,eval}.yaml`. `train` wrappers augment training
rows (`WrapperLibrary.sample`); `eval` wrappers, written separately (no shared sentence), are only used by
the invariance evaluation (`WrapperLibrary.wrap` per condition), so a model is never scored on a wrapper
it was trained on.

`wrap` returns a request body as the service reads it: `{"text": ...}` or `{"messages": [...]}`, plus
`"tools"` when the app sends tool definitions. The task text always appears verbatim; for every condition
except `follow_up` it is inside the last user message.
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tierwise.training.paths import wrappers_dir
from tierwise.training.wrapper_entries import (
    TASK_SLOT,
    History,
    Message,
    Passage,
    Snippet,
    SystemPrompt,
    parse_few_shot_header,
    parse_history,
    parse_snippet,
    parse_system_prompt,
    parse_tool,
    passages_text,
)

SPLITS: tuple[str, ...] = ("train", "eval")
CONDITIONS: tuple[str, ...] = (
    "system_short",
    "system_long",
    "format_rule",
    "few_shot",
    "multi_turn",
    "agent_tools",
    "rag",
    "developer_parts",
    "follow_up",
    "mixed",
)
# Training augmentation leans on the shapes most traffic has: a system prompt, a format rule, a mix.
SAMPLE_WEIGHTS: dict[str, float] = {
    "system_short": 0.14,
    "system_long": 0.08,
    "format_rule": 0.12,
    "few_shot": 0.07,
    "multi_turn": 0.12,
    "agent_tools": 0.06,
    "rag": 0.08,
    "developer_parts": 0.06,
    "follow_up": 0.05,
    "mixed": 0.22,
}
ROLES: frozenset[str] = frozenset({"system", "developer", "user", "assistant", "tool"})
# BERT pre-tokenization splits on spaces and punctuation; WordPiece only splits further, so this count is
# a lower bound of the real token count (tests check the bounds with the real tokenizer).
SHORT_MAX_PRETOKENS = 110
LONG_MIN_PRETOKENS = 800
_PRETOKEN = re.compile(r"[^\W_]+|[^\w\s]|_")

Body = dict[str, Any]


def pretoken_count(text: str) -> int:
    """Words and punctuation marks: a lower bound of the BERT WordPiece token count."""
    return len(_PRETOKEN.findall(text))


@dataclass(frozen=True)
class WrapperLibrary:
    split: str
    system_prompts: tuple[SystemPrompt, ...]
    format_rules: tuple[Snippet, ...]
    few_shot_headers: tuple[Snippet, ...]
    histories: tuple[History, ...]
    follow_ups: tuple[Snippet, ...]
    acknowledgements: tuple[Snippet, ...]
    source: Path = field(default=Path(), compare=False)

    @classmethod
    def load(cls, split: str, directory: Path | None = None) -> WrapperLibrary:
        if split not in SPLITS:
            raise ValueError(f"unknown wrapper split {split!r}: use one of {', '.join(SPLITS)}")
        path = (directory or wrappers_dir()) / f"{split}.yaml"
        if not path.is_file():
            raise FileNotFoundError(
                f"wrapper library {path} is missing: it is project data, restore it from git "
                f"(git checkout -- data/wrappers/{split}.yaml) or pass the folder that holds it"
            )
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
            return _parse_library(split, raw, path)
        except (KeyError, TypeError, ValueError, yaml.YAMLError) as err:
            raise ValueError(f"{path}: {err}; fix the entry (see data/README.md, 'Wrapper library')") from err

    # Pools -----------------------------------------------------------------------------------------

    def short_prompts(self) -> list[SystemPrompt]:
        return [p for p in self.system_prompts if pretoken_count(p.text) < SHORT_MAX_PRETOKENS]

    def long_prompts(self) -> list[SystemPrompt]:
        return [p for p in self.system_prompts if pretoken_count(p.text) >= LONG_MIN_PRETOKENS]

    def plain_prompts(self) -> list[SystemPrompt]:
        """Prompts that neither need tools nor carry passages: any chat app."""
        return [p for p in self.system_prompts if not p.tools and not p.passages]

    def agent_prompts(self) -> list[SystemPrompt]:
        return [p for p in self.system_prompts if p.app == "coding_agent" and p.tools]

    def rag_prompts(self) -> list[SystemPrompt]:
        return [p for p in self.system_prompts if p.passages]

    def chat_histories(self) -> list[History]:
        return [h for h in self.histories if h.kind == "chat"]

    def tool_histories(self, prompt: SystemPrompt) -> list[History]:
        names = {t["function"]["name"] for t in prompt.tools}
        return [h for h in self.histories if h.kind == "tools" and h.tool_names() <= names]

    # Wrapping --------------------------------------------------------------------------------------

    def wrap(self, text: str, condition: str, rng: random.Random) -> Body:
        """An OpenAI-style request body holding `text` verbatim, wrapped as `condition` says."""
        builders: dict[str, Callable[[str, random.Random], Body]] = {
            "system_short": self._system_short,
            "system_long": self._system_long,
            "format_rule": self._format_rule,
            "few_shot": self._few_shot,
            "multi_turn": self._multi_turn,
            "agent_tools": self._agent_tools,
            "rag": self._rag,
            "developer_parts": self._developer_parts,
            "follow_up": self._follow_up,
            "mixed": self._mixed,
        }
        if condition not in builders:
            raise ValueError(f"unknown wrapper condition {condition!r}: use one of {', '.join(CONDITIONS)}")
        return builders[condition](text, rng)

    def sample(self, text: str, rng: random.Random) -> Body:
        """A random condition, weighted toward realistic mixes: for training augmentation."""
        condition = rng.choices(CONDITIONS, weights=[SAMPLE_WEIGHTS[c] for c in CONDITIONS])[0]
        return self.wrap(text, condition, rng)

    def _system_short(self, text: str, rng: random.Random) -> Body:
        prompt = rng.choice(self.short_prompts())
        return _body([_message("system", prompt.text), _message("user", text)], prompt.tools)

    def _system_long(self, text: str, rng: random.Random) -> Body:
        prompt = rng.choice(self.long_prompts())
        return _body([_message("system", prompt.text), _message("user", text)], prompt.tools)

    def _format_rule(self, text: str, rng: random.Random) -> Body:
        content = with_rule(text, rng.choice(self.format_rules), rng)
        if rng.random() < 0.5:
            return {"text": content}
        return {"messages": [_message("user", content)]}

    def _few_shot(self, text: str, rng: random.Random) -> Body:
        header = rng.choice(self.few_shot_headers)
        return {"text": header.text.replace(TASK_SLOT, text)}

    def _multi_turn(self, text: str, rng: random.Random) -> Body:
        prompt = rng.choice(self.plain_prompts())
        history = rng.choice(self.chat_histories())
        return _body([_message("system", prompt.text), *_copied(history), _message("user", text)])

    def _agent_tools(self, text: str, rng: random.Random) -> Body:
        prompt = rng.choice(self.agent_prompts())
        history = rng.choice(self.tool_histories(prompt))
        messages = [_message("system", prompt.text), *_copied(history), _message("user", text)]
        return _body(messages, prompt.tools)

    def _rag(self, text: str, rng: random.Random) -> Body:
        prompt = rng.choice(self.rag_prompts())
        layout = rng.randrange(3)
        if layout == 0:  # passages inside the system prompt
            return _body([_message("system", prompt.text), _message("user", text)])
        context = f"Context:\n{passages_text(prompt.passages)}"
        if layout == 1:  # passages and question in one user turn
            return _body([_message("system", prompt.instruction), _message("user", f"{context}\n\n{text}")])
        messages = [_message("system", prompt.instruction), _message("user", context), _message("user", text)]
        return _body(messages)

    def _developer_parts(self, text: str, rng: random.Random) -> Body:
        prompt = rng.choice(self.system_prompts)
        parts = [{"type": "text", "text": text}]
        if rng.random() < 0.5:
            rule = {"type": "text", "text": rng.choice(self.format_rules).text}
            parts = [rule, *parts] if rng.random() < 0.25 else [*parts, rule]
        history = _copied(rng.choice(self.tool_histories(prompt))) if prompt.tools else []
        messages = [_message("developer", prompt.text), *history, _message("user", parts)]
        return _body(messages, prompt.tools)

    def _follow_up(self, text: str, rng: random.Random) -> Body:
        messages = [_message("system", rng.choice(self.plain_prompts()).text)] if rng.random() < 0.5 else []
        ack = rng.choice(self.acknowledgements).text
        messages += [_message("user", text), _message("assistant", ack)]
        messages.append(_message("user", rng.choice(self.follow_ups).text))
        return {"messages": messages}

    def _mixed(self, text: str, rng: random.Random) -> Body:
        messages: list[Message] = []
        prompt = rng.choice(self.system_prompts) if rng.random() < 0.85 else None
        if prompt is not None:
            messages.append(_message("developer" if rng.random() < 0.15 else "system", prompt.text))
            if prompt.tools:
                messages += _copied(rng.choice(self.tool_histories(prompt)))
        if rng.random() < 0.35 and not (prompt and prompt.tools):
            messages += _copied(rng.choice(self.chat_histories()))
        content = with_rule(text, rng.choice(self.format_rules), rng) if rng.random() < 0.35 else text
        messages.append(_message("user", content))
        return _body(messages, prompt.tools if prompt else ())


def with_rule(text: str, rule: Snippet, rng: random.Random) -> str:
    """The task with a format rule before or after it, separated the way people type it."""
    separator = rng.choice(["\n\n", "\n", " "])
    return f"{rule.text}{separator}{text}" if rule.position == "before" else f"{text}{separator}{rule.text}"


def _message(role: str, content: str | list[dict[str, str]]) -> Message:
    return {"role": role, "content": content}


def _copied(history: History) -> list[Message]:
    return copy.deepcopy(list(history.messages))


def _body(messages: list[Message], tools: Sequence[dict[str, Any]] = ()) -> Body:
    body: Body = {"messages": messages}
    if tools:
        body["tools"] = copy.deepcopy(list(tools))
    return body


# Loading ---------------------------------------------------------------------------------------------


def _parse_library(split: str, raw: Any, path: Path) -> WrapperLibrary:
    if not isinstance(raw, Mapping):
        raise ValueError("the file must hold a mapping with system_prompts, format_rules, ... keys")
    if raw.get("split") != split:
        raise ValueError(f"'split' is {raw.get('split')!r}, expected {split!r}")
    blocks: Mapping[str, str] = raw.get("blocks") or {}
    passages = {k: Passage(k, v["title"], v["text"].strip()) for k, v in (raw.get("passages") or {}).items()}
    tools = {name: parse_tool(name, spec) for name, spec in (raw.get("tools") or {}).items()}
    library = WrapperLibrary(
        split=split,
        system_prompts=tuple(parse_system_prompt(e, blocks, passages, tools) for e in raw["system_prompts"]),
        format_rules=tuple(parse_snippet(e) for e in raw["format_rules"]),
        few_shot_headers=tuple(parse_few_shot_header(e) for e in raw["few_shot_headers"]),
        histories=tuple(parse_history(e) for e in raw["histories"]),
        follow_ups=tuple(parse_snippet(e) for e in raw["follow_ups"]),
        acknowledgements=tuple(parse_snippet(e) for e in raw["acknowledgements"]),
        source=path,
    )
    _check_pools(library)
    return library


def _check_pools(library: WrapperLibrary) -> None:
    pools = {
        "short system prompts": library.short_prompts(),
        "long system prompts": library.long_prompts(),
        "plain system prompts": library.plain_prompts(),
        "coding-agent prompts with tools": library.agent_prompts(),
        "RAG prompts with passages": library.rag_prompts(),
        "chat histories": library.chat_histories(),
        "format rules": list(library.format_rules),
        "few-shot headers": list(library.few_shot_headers),
        "follow-ups": list(library.follow_ups),
        "acknowledgements": list(library.acknowledgements),
    }
    empty = [name for name, pool in pools.items() if not pool]
    if empty:
        raise ValueError(f"no {', no '.join(empty)}")
    missing = [p.id for p in library.system_prompts if p.tools and not library.tool_histories(p)]
    if missing:
        raise ValueError(f"prompts with tools but no tool history using only their tools: {missing}")
