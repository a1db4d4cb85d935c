"""From every verdict to per-prompt targets: difficulty, P(class fails), tier and soft target.

One item-response fit (difficulty.py) over all collections puts every prompt and every model on one
scale; models of several collections share one ability (verdicts.model_key). Today's price classes
are the ZeroEval core models of each class (zeroeval/models.json), so for any prompt

    P(class c fails) = mean over the class's models m of 1 - P(m knows the prompt)

without the guessing floor (real requests are not multiple choice) and averaged over the prompt's
uncertain difficulty: a prompt with few verdicts keeps a difficulty near its source's mean and a
less certain answer. The tier is the cheapest class whose P(fail) is at most `FAIL_THRESHOLD`, and
the soft target is the distribution of the cheapest class that succeeds:

    [1 - f_fast, f_fast - f_fast_and_balanced, f_fast_and_balanced],  f_fast_and_balanced = min(f_fast, f_balanced)

so `frontier` also holds what no class is likely to solve.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from tierwise.training.difficulty import IrtFit, ItemLayout, Priors, Verdicts, fit_irt
from tierwise.training.labels import TIERS
from tierwise.training.source_groups import source_group
from tierwise.training.verdicts import VerdictTable

FAIL_THRESHOLD = 0.5  # a class serves a prompt when its typical model is more likely right than not
# A "hard" row: the cheap class almost surely fails it. The gate and the choice of q count these.
HARD_P_FAIL = 0.8


def is_hard(row: Mapping) -> bool:
    """Whether the item-response fit says the cheap class almost surely fails this row."""
    return (row.get("p_fail") or {}).get("fast", 0.0) >= HARD_P_FAIL


@dataclass(frozen=True)
class Difficulty:
    difficulty: float  # b on the fit's scale (shared by every source)
    difficulty_sd: float  # posterior sd of b: large where verdicts are few
    evidence: int  # number of verdicts on the prompt
    p_fail: dict[str, float]  # tier -> P(a model of that class fails)
    tier: str  # cheapest class with P(fail) <= FAIL_THRESHOLD, else frontier
    soft_target: list[float]  # (tiers,) P(cheapest succeeding class = tier)

    def record(self) -> dict:
        return {
            "difficulty": round(self.difficulty, 4),
            "difficulty_sd": round(self.difficulty_sd, 4),
            "evidence": self.evidence,
            "p_fail": {t: round(p, 4) for t, p in self.p_fail.items()},
            "target_tier": self.tier,
            "soft_target": [round(q, 4) for q in self.soft_target],
        }


def tier_from_p_fail(p_fail: Mapping[str, float], threshold: float = FAIL_THRESHOLD) -> str:
    for tier in TIERS[:-1]:
        if p_fail[tier] <= threshold:
            return tier
    return TIERS[-1]


def soft_target(p_fail: Mapping[str, float]) -> list[float]:
    """(fast, balanced, frontier): P(cheapest succeeding class), classes nested by ability."""
    beyond_fast = p_fail["fast"]
    beyond_balanced = min(beyond_fast, p_fail["balanced"])
    return [1.0 - beyond_fast, beyond_fast - beyond_balanced, beyond_balanced]


def _index(values: list[str]) -> tuple[list[str], np.ndarray]:
    """Sorted distinct values and each value's index into them."""
    names = sorted(set(values))
    where = {name: i for i, name in enumerate(names)}
    return names, np.array([where[v] for v in values], dtype=np.int64)


def _verdict_arrays(table: VerdictTable, keys: list[str], model_index: dict[str, int]) -> Verdicts:
    items, models, outcomes, guess = [], [], [], []
    for i, key in enumerate(keys):
        entry = table.items[key]
        items += [i] * len(entry.models)
        models += [model_index[m] for m in entry.models]
        outcomes += entry.outcomes
        guess += entry.guess
    return Verdicts(np.array(items), np.array(models), np.array(outcomes), np.array(guess))


def class_p_fail(fit: IrtFit, class_models: Mapping[str, list[int]]) -> dict[str, np.ndarray]:
    """tier -> (items,) mean over the class's models of P(model fails the item)."""
    items = np.arange(fit.layout.n_items)
    return {
        tier: np.mean([1.0 - fit.p_solve(items, np.full_like(items, m)) for m in models], axis=0)
        for tier, models in class_models.items()
    }


def fit_difficulty(
    table: VerdictTable,
    price_classes: Mapping[str, str],
    sources: Mapping[str, str] | None = None,
    priors: Priors | None = None,
    max_iter: int = 2000,
) -> tuple[dict[str, Difficulty], IrtFit]:
    """dedup key -> Difficulty for every prompt with verdicts; `sources` overrides an item's source.

    `price_classes`: model_key -> tier of the models that stand for today's classes; every tier
    needs at least one of them among the models with verdicts.
    """
    keys = sorted(table.items)
    item_sources = [(sources or {}).get(k, table.items[k].source) for k in keys]
    _, prior_group = _index(item_sources)
    _, ability_group = _index([source_group(s) for s in item_sources])
    model_names, _ = _index([m for k in keys for m in table.items[k].models])
    model_index = {m: i for i, m in enumerate(model_names)}
    class_models = {
        t: [model_index[m] for m, c in price_classes.items() if c == t and m in model_index] for t in TIERS
    }
    missing = [t for t, models in class_models.items() if not models]
    if missing:
        raise ValueError(f"no model with verdicts stands for the class(es) {missing}")
    layout = ItemLayout(
        prior_group=prior_group,
        ability_group=ability_group,
        n_models=len(model_names),
        n_prior_groups=int(prior_group.max()) + 1,
        n_ability_groups=int(ability_group.max()) + 1,
    )
    fit = fit_irt(_verdict_arrays(table, keys, model_index), layout, priors, max_iter)
    p_fail = class_p_fail(fit, class_models)
    out = {}
    for i, key in enumerate(keys):
        fails = {t: float(p_fail[t][i]) for t in TIERS}
        out[key] = Difficulty(
            difficulty=float(fit.b[i]),
            difficulty_sd=float(fit.b_sd[i]),
            evidence=int(fit.evidence[i]),
            p_fail=fails,
            tier=tier_from_p_fail(fails),
            soft_target=soft_target(fails),
        )
    return out, fit
