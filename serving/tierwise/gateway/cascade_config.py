"""The policy's `cascade:` section: check the cheap tier's answer and retry one tier up when it fails.

    cascade:
      max_retries: 1               # retries per request, each one tier up (0: check and record only)
      max_usd_per_request: 0.05    # estimated spend of one request, retries included, at the policy's prices
      checks: [truncated, empty, refusal, json, tools]   # the local checks (the default: all of them)
      streams: buffer              # buffer: streams that ask for JSON or tools are checked; pass: none
      feedback: true               # every failed check is sent to POST /feedback (source cascade)
      judge:                       # optional: an LLM judge grades answers the local checks passed
        model: o3                  # a model group of the gateway (never called for a private request)
        min_grade: 4               # 1-5; below it the answer fails (reason judge_low)
        share: 0.02                # of answers, chosen by a hash of the request id
        failure_rate: 0.2          # ... and every answer of a segment (route, tier) failing this often
                                   # (routes of the policy's `routes:`; all others are one segment)
        min_answers: 50            # answers a segment needs before its failure rate counts
        window: 500                # the last answers per segment that the rate is measured on

No section (or `enabled: false`) turns the cascade off. Kept apart from core/policy.py, like the
`shadow:` section (evidence/shadow_config.py): reading a policy for routing ignores it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The local checks and the reasons they give (cascade.py); `json` gives invalid_json or schema_mismatch.
LOCAL_CHECKS = ("truncated", "empty", "refusal", "json", "tools")
STREAM_MODES = ("buffer", "pass")
JUDGE_WINDOW = 500  # the last answers per segment its failure rate is measured on (`judge.window`)
DEFAULTS: dict[str, Any] = {
    "max_retries": 1,
    "max_usd_per_request": 0.05,
    "streams": "buffer",
    "feedback": True,
}
JUDGE_DEFAULTS: dict[str, Any] = {
    "min_grade": 4,
    "share": 0.0,
    "failure_rate": None,
    "min_answers": 50,
    "window": JUDGE_WINDOW,
}
KEYS = {"enabled", "checks", "judge", *DEFAULTS}
JUDGE_KEYS = {"model", *JUDGE_DEFAULTS}


class CascadeConfigError(ValueError):
    """The `cascade` section is malformed; the message names the key."""


@dataclass(frozen=True)
class JudgeConfig:
    model: str
    min_grade: int
    share: float
    failure_rate: float | None  # None: only the sampled share is judged
    min_answers: int
    window: int


@dataclass(frozen=True)
class CascadeConfig:
    max_retries: int = DEFAULTS["max_retries"]
    max_usd_per_request: float | None = DEFAULTS["max_usd_per_request"]  # None: no cap
    checks: frozenset[str] = frozenset(LOCAL_CHECKS)
    streams: str = DEFAULTS["streams"]
    feedback: bool = DEFAULTS["feedback"]
    judge: JudgeConfig | None = None

    @property
    def judge_window(self) -> int:
        """The answers per segment whose failure rate decides when the judge grades them all."""
        return self.judge.window if self.judge is not None else JUDGE_WINDOW


def _number(raw: Mapping[str, Any], key: str, where: str, low: float, high: float | None = None) -> float:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CascadeConfigError(f"{where}.{key} must be a number, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"from {low:g} to {high:g}" if high is not None else f"at least {low:g}"
        raise CascadeConfigError(f"{where}.{key} must be {bound}, got {value!r}")
    return float(value)


def _integer(raw: Mapping[str, Any], key: str, where: str, low: int, high: int | None = None) -> int:
    value = _number(raw, key, where, low, high)
    if not value.is_integer():
        raise CascadeConfigError(f"{where}.{key} must be a whole number, got {raw[key]!r}")
    return int(value)


def _unknown(raw: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in set(raw) - known)
    if unknown:
        raise CascadeConfigError(f"{where} has unknown key(s) {unknown}; known: {sorted(known)}")


def parse_judge(raw: Any, where: str) -> JudgeConfig | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not raw.get("model"):
        raise CascadeConfigError(f"{where} needs `model`: the gateway's model group that grades answers")
    _unknown(raw, JUDGE_KEYS, where)
    values = {**JUDGE_DEFAULTS, **raw}
    rate = values["failure_rate"]
    return JudgeConfig(
        model=str(raw["model"]),
        min_grade=_integer(values, "min_grade", where, 1, 5),
        share=_number(values, "share", where, 0.0, 1.0),
        failure_rate=None if rate is None else _number(values, "failure_rate", where, 0.0, 1.0),
        min_answers=_integer(values, "min_answers", where, 1),
        window=_integer(values, "window", where, 1),
    )


def parse_cascade(raw: Any, source: str = "policy") -> CascadeConfig | None:
    """The cascade settings, or None when the section is absent or says `enabled: false`."""
    where = f"{source}: cascade"
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise CascadeConfigError(f"{where} must be a mapping (max_retries, max_usd_per_request, checks, ...)")
    _unknown(raw, KEYS, where)
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise CascadeConfigError(f"{where}.enabled must be true or false, got {enabled!r}")
    if not enabled:
        return None
    values = {**DEFAULTS, **raw}
    cap = values["max_usd_per_request"]
    checks = values.get("checks", list(LOCAL_CHECKS))
    if not isinstance(checks, list) or not set(map(str, checks)) <= set(LOCAL_CHECKS):
        raise CascadeConfigError(f"{where}.checks must list some of {list(LOCAL_CHECKS)}, got {checks!r}")
    if values["streams"] not in STREAM_MODES:
        raise CascadeConfigError(
            f"{where}.streams must be one of {list(STREAM_MODES)}, got {values['streams']!r}"
        )
    if not isinstance(values["feedback"], bool):
        raise CascadeConfigError(f"{where}.feedback must be true or false, got {values['feedback']!r}")
    return CascadeConfig(
        max_retries=_integer(values, "max_retries", where, 0, 10),
        max_usd_per_request=None if cap is None else _number(values, "max_usd_per_request", where, 0.0),
        checks=frozenset(str(c) for c in checks),
        streams=str(values["streams"]),
        feedback=values["feedback"],
        judge=parse_judge(raw.get("judge"), f"{where}.judge"),
    )


def load_cascade_config(policy_file: Path) -> CascadeConfig | None:
    """The `cascade` section of a policy YAML file (read apart from `load_policy`, which ignores it)."""
    import yaml

    raw = yaml.safe_load(Path(policy_file).read_text(encoding="utf-8")) or {}
    return parse_cascade(raw.get("cascade") if isinstance(raw, Mapping) else None, str(policy_file))
