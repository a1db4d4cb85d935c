"""Reading a routing policy: the YAML file (`policy.yaml` beside this module is the packaged default)
into the typed `Policy` of policy.py, validated, with a PolicyError naming the bad key."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tierwise.core.policy import (
    DEFAULT_DEADLINE_MS,
    CanaryConfig,
    LongContextRule,
    Policy,
    PolicyError,
    RouteOverride,
    TierConfig,
)

# The policy shipped with the package (package data, so it is found wherever tierwise is installed).
DEFAULT_POLICY_FILE = Path(__file__).with_name("policy.yaml")


def _tier_config(raw: Any, where: str) -> TierConfig:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where} must be a mapping with name, models, price_per_million, context_tokens")
    try:
        name = str(raw["name"])
        models = raw["models"]
        if isinstance(models, str):
            models = [models]
        if not models:
            raise PolicyError(f"{where}.models must list at least one model")
        prices = raw.get("price_per_million") or {}
        return TierConfig(
            name=name,
            models=tuple(str(m) for m in models),
            input_price_per_million=float(prices.get("input", 0.0)),
            output_price_per_million=float(prices.get("output", 0.0)),
            context_tokens=int(raw.get("context_tokens", 10**9)),
        )
    except KeyError as err:
        raise PolicyError(f"{where} has no {err}; every tier needs a name and models") from err
    except (TypeError, ValueError) as err:
        raise PolicyError(f"{where}: {err}") from err


def section_number(
    raw: Mapping[str, Any],
    key: str,
    default: Any,
    where: str,
    source: str,
    low: float,
    high: float | None = None,
    error: type[ValueError] = PolicyError,
) -> float:
    """`raw[key]` (else `default`) as a number from `low` to `high` for an optional policy section
    (`where`: its name, e.g. "shadow"); `error` says which key of which file to fix."""
    value = raw.get(key, default)
    name = f"{source}: {where}.{key}"
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise error(f"{name} must be a number, got {value!r}") from err
    if number < low or (high is not None and number > high):
        bound = f"from {low:g} to {high:g}" if high is not None else f"at least {low:g}"
        raise error(f"{name} must be {bound}, got {number:g}")
    return number


def parse_policy(raw: Any, source: str = "policy") -> Policy:
    """Validate a policy mapping (as read from YAML); raise PolicyError naming the bad key."""
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{source} must be a YAML mapping with a `tiers` list")
    tiers_raw = raw.get("tiers")
    if not isinstance(tiers_raw, list) or len(tiers_raw) < 2:
        raise PolicyError(f"{source}: `tiers` must list at least two tiers, cheapest first")
    tiers = tuple(_tier_config(t, f"{source}: tiers[{i}]") for i, t in enumerate(tiers_raw))
    names = [t.name for t in tiers]
    if len(set(names)) != len(names):
        raise PolicyError(f"{source}: tier names must be distinct, got {names}")

    def known(name: Any, key: str) -> str | None:
        if name is None:
            return None
        if str(name) not in names:
            raise PolicyError(f"{source}: {key} is '{name}', not one of the tiers {names}")
        return str(name)

    q = raw.get("escalation_q")
    if q is not None and not 0.0 <= float(q) <= 1.0:
        raise PolicyError(f"{source}: escalation_q must be in [0, 1] or null, got {q}")
    long_raw = raw.get("long_context") or {}
    threshold = long_raw.get("threshold_tokens")
    long_context = LongContextRule(
        threshold_tokens=None if threshold is None else int(threshold),
        min_tier=known(long_raw.get("min_tier"), "long_context.min_tier"),
    )
    private_raw = raw.get("private_tier")
    private = None if private_raw is None else _tier_config(private_raw, f"{source}: private_tier")
    if private is not None and private.name in names:
        raise PolicyError(f"{source}: private_tier '{private.name}' must not also be an ordered tier")
    routes: dict[str, RouteOverride] = {}
    for route, spec in (raw.get("routes") or {}).items():
        if not isinstance(spec, Mapping) or not ({"tier", "min_tier"} & set(spec)):
            raise PolicyError(f"{source}: routes.{route} needs `tier` (a pin) or `min_tier` (a floor)")
        routes[str(route)] = RouteOverride(
            tier=known(spec.get("tier"), f"routes.{route}.tier"),
            min_tier=known(spec.get("min_tier"), f"routes.{route}.min_tier"),
        )
    deadline = float(raw.get("deadline_ms") or DEFAULT_DEADLINE_MS)
    if deadline <= 0:
        raise PolicyError(f"{source}: deadline_ms must be > 0, got {deadline}")
    return Policy(
        tiers=tiers,
        expected_output_tokens=int(raw.get("expected_output_tokens", 300)),
        escalation_q=None if q is None else float(q),
        long_context=long_context,
        private_tier=private,
        routes=routes,
        deadline_ms=deadline,
        canary=parse_canary(raw.get("canary"), source),
    )


def parse_canary(raw: Any, source: str) -> CanaryConfig | None:
    """`canary: {model_dir: models/candidate, share: 0.05}`; a relative model_dir is read from the
    working directory, like TIERWISE_MODEL_DIR. A share of 0 (or no `canary` key) turns it off."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or "model_dir" not in raw or "share" not in raw:
        raise PolicyError(f"{source}: canary needs `model_dir` (a model folder) and `share` (0 to 1)")
    try:
        share = float(raw["share"])
    except (TypeError, ValueError) as err:
        raise PolicyError(
            f"{source}: canary.share must be a number from 0 to 1, got {raw['share']!r}"
        ) from err
    if not 0.0 <= share <= 1.0:
        raise PolicyError(f"{source}: canary.share must be from 0 to 1 (0.05 = 5% of requests), got {share}")
    if share == 0.0:
        return None
    return CanaryConfig(model_dir=Path(str(raw["model_dir"])), share=share)


def load_policy(path: Path) -> Policy:
    """Read and validate a policy YAML file."""
    path = Path(path)
    if not path.is_file():
        raise PolicyError(f"policy file {path} does not exist; pass --policy or set TIERWISE_POLICY_FILE")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise PolicyError(f"policy file {path} is not valid YAML: {err}") from err
    return parse_policy(raw, str(path))
