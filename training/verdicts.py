"""Every model verdict the readers see, per prompt: the input of the item-response fit.

Readers (sources.py, price_class_sources.py) note each row's verdicts here before their label rule
decides, so rows that no tier passes still tell the fit how hard they are and how able the models
are. Models are named the same way across collections (`model_key`) so that, e.g., Llama-3.1-8B of
ZeroEval, MMLU-Pro and LLMRouter shares one ability.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from tierwise.training.text_cleaning import dedup_key

# Names that differ across collections for one model (after `model_key`'s generic rules).
MODEL_ALIASES = {
    "mixtral-8x7b-chat": "mixtral-8x7b-instruct-v0.1",  # RouterBench's name for Mixtral-8x7B-Instruct
    "gpt-4-1106-preview": "gpt-4-turbo",  # the preview of gpt-4-turbo (ZeroEval: gpt-4-turbo-2024-04-09)
    "gpt-3.5": "gpt-3.5-turbo",  # OpenAssistant's ratings name gpt-3.5-turbo like this
}
# A snapshot date or version at the end of a name: -20240620, -2024-08-06, -0125, -1106, -002.
_SNAPSHOT = re.compile(r"-(20\d{6}|20\d\d-\d\d-\d\d|0\d{3}|1[0-2]\d\d|00\d)$")


def model_key(name: str) -> str:
    """One name per model across collections: lower case, no provider, no snapshot, 3_1 -> 3.1."""
    key = name.lower().split("/")[-1].split("@")[0].replace("_", ".")
    key = re.sub(r"^meta-llama-", "llama-", key)
    key = _SNAPSHOT.sub("", key)
    return MODEL_ALIASES.get(key, key)


@dataclass
class ItemVerdicts:
    source: str  # the benchmark of the first collection that noted the prompt (its prior group)
    models: list[str] = field(default_factory=list)  # model_key of each verdict
    outcomes: list[float] = field(default_factory=list)  # 1 right, 0 wrong, a judged share between
    guess: list[float] = field(default_factory=list)  # chance of a right answer by guessing


@dataclass
class VerdictTable:
    items: dict[str, ItemVerdicts] = field(default_factory=dict)  # dedup_key(text) -> verdicts

    def add(self, text: str, source: str, outcomes: Mapping[str, float], guess: float = 0.0) -> None:
        """Note one prompt's verdicts (model name -> outcome); a prompt seen again gains more."""
        if not outcomes:
            return
        item = self.items.setdefault(dedup_key(text), ItemVerdicts(source))
        for model, outcome in outcomes.items():
            item.models.append(model_key(model))
            item.outcomes.append(float(outcome))
            item.guess.append(guess)

    def __len__(self) -> int:
        return len(self.items)


def choice_guess(n_choices: int) -> float:
    """The guessing floor of a multiple-choice question with n choices (0 when it is not one)."""
    return 1.0 / n_choices if n_choices >= 2 else 0.0
