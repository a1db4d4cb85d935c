"""The policy's `shadow:` section: judge a sampled share of the requests routed below the top tier.

    shadow:
      share: 0.02                 # of the requests routed below the top tier (0 or no section: off)
      judge_model: o3             # a top-tier model: it judges against the top tier's answer
      tiers: [fast, balanced]     # default: every tier below the top
      max_usd_per_hour: 2.0       # spend cap; beyond it requests are skipped (and counted)
      base_url: http://localhost:4000/v1   # default: TIERWISE_LLM_BASE_URL
      api_key_env: OPENAI_API_KEY
      queue_size: 100             # requests waiting for evaluation; beyond it they are dropped
      concurrency: 2              # evaluations at once
      timeout_seconds: 60

Kept apart from serving/tierwise/evidence/shadow.py so that reading a policy needs no HTTP client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tierwise.core.policy_file import section_number

DEFAULTS: dict[str, Any] = {
    "max_usd_per_hour": 1.0,
    "api_key_env": "OPENAI_API_KEY",
    "queue_size": 100,
    "concurrency": 2,
    "timeout_seconds": 60.0,
}
KEYS = {"share", "judge_model", "tiers", "base_url", *DEFAULTS}


class ShadowConfigError(ValueError):
    """The `shadow` section is malformed; the message names the key."""


@dataclass(frozen=True)
class ShadowConfig:
    share: float
    judge_model: str
    tiers: tuple[str, ...]
    base_url: str | None
    max_usd_per_hour: float
    api_key_env: str
    queue_size: int
    concurrency: int
    timeout_seconds: float


def _number(raw: Mapping[str, Any], key: str, source: str, low: float, high: float | None = None) -> float:
    return section_number(raw, key, DEFAULTS.get(key), "shadow", source, low, high, ShadowConfigError)


def parse_shadow(raw: Any, source: str, tier_names: Sequence[str]) -> ShadowConfig | None:
    """The shadow settings, or None when absent or with share 0 (off)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or "share" not in raw:
        raise ShadowConfigError(f"{source}: shadow needs `share` (0 to 1) and `judge_model`")
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise ShadowConfigError(f"{source}: shadow has unknown key(s) {unknown}; known: {sorted(KEYS)}")
    share = _number(raw, "share", source, 0.0, 1.0)
    if share == 0.0:
        return None
    if not raw.get("judge_model"):
        raise ShadowConfigError(f"{source}: shadow.judge_model must name the judge model")
    below_top = tuple(tier_names[:-1])
    tiers = tuple(str(t) for t in raw.get("tiers") or below_top)
    wrong = [t for t in tiers if t not in below_top]
    if wrong:
        raise ShadowConfigError(
            f"{source}: shadow.tiers {wrong} must be tiers below the top: {list(below_top)}"
        )
    return ShadowConfig(
        share=share,
        judge_model=str(raw["judge_model"]),
        tiers=tiers,
        base_url=str(raw["base_url"]) if raw.get("base_url") else None,
        max_usd_per_hour=_number(raw, "max_usd_per_hour", source, 0.0),
        api_key_env=str(raw.get("api_key_env", DEFAULTS["api_key_env"])),
        queue_size=int(_number(raw, "queue_size", source, 1)),
        concurrency=int(_number(raw, "concurrency", source, 1)),
        timeout_seconds=_number(raw, "timeout_seconds", source, 0.1),
    )


def load_shadow_config(policy_file: Any, tier_names: Sequence[str]) -> ShadowConfig | None:
    """The `shadow` section of a policy YAML file (read apart from `load_policy`, which ignores it)."""
    from pathlib import Path

    import yaml

    raw = yaml.safe_load(Path(policy_file).read_text(encoding="utf-8")) or {}
    return parse_shadow(raw.get("shadow") if isinstance(raw, Mapping) else None, str(policy_file), tier_names)
