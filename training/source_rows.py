"""What every reader in `tierwise.training.sources` yields and counts, and how it reads a JSONL file."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tierwise.training.verdicts import VerdictTable


@dataclass(frozen=True)
class LabeledPrompt:
    text: str
    allowed: frozenset[str]
    source: str  # the benchmark or dataset: "mmlu", "gsm8k", "oasst", ...
    origin: str  # the collection folder it was read from: "routellm", "routerbench", ...
    weight: float = 1.0
    lang: str = "en"
    # A user's row sent as a conversation: {"messages": [...], "tools": [...]}, so training reads it
    # the way the service does (task first); `text` is then its every word, for dedup and baselines.
    request: dict | None = field(default=None, compare=False)


@dataclass
class SourceStats:
    """Rows read and dropped (with the reason) per origin, for the datasheet; verdicts for the fit."""

    read: Counter[str] = field(default_factory=Counter)
    dropped: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    # Rows kept but worth a look (e.g. shaberi inversions), counted per origin for the datasheet.
    notes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    # Every model verdict per prompt, rows no tier passes included: the item-response fit's input.
    verdicts: VerdictTable = field(default_factory=VerdictTable)
    # model_key -> today's price class (fast / balanced / frontier) of the models that stand for it.
    price_classes: dict[str, str] = field(default_factory=dict)

    def drop(self, origin: str, reason: str) -> None:
        self.dropped[origin][reason] += 1

    def note(self, origin: str, what: str) -> None:
        self.notes[origin][what] += 1


def nonblank_lines(path: Path) -> Iterator[str]:
    """Non-blank lines; only \n ends a line (str.splitlines would also split on U+2028 in a JSON string)."""
    with open(path, encoding="utf-8") as f:
        yield from (line for line in f if line.strip())
