"""The chain of LiteLLM model groups a tierwise decision gives (its model, then its fallbacks, kept
to the groups the router knows), and the fields that make a private request fail closed: never a
public fallback, few retries, a bounded timeout. Used by the SDK router and the proxy hook
(litellm_router.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tierwise.core.privacy import PRIVATE_DATA
from tierwise.gateway.client import AsyncTierwiseClient, TierwiseClient
from tierwise.gateway.wire import PrivateDataUnroutableError, Routing

# How long a private request may take to fail closed: LiteLLM's retries of it after a failure (each after
# a back-off sleep; 0: the private tier's other models, its `fallbacks`, are the second chance) and the
# timeout of each attempt in seconds (for a non-streamed answer it bounds the whole generation, so keep
# it above the private model's slowest answer). Settings of TierwiseLiteLLMRouter / TierwiseProxyHook
# (`private_retries=`, `private_timeout_s=`; the proxy's hook: TIERWISE_PRIVATE_RETRIES,
# TIERWISE_PRIVATE_TIMEOUT_SECONDS); see LITELLM.md.
PRIVATE_RETRIES = 0
PRIVATE_TIMEOUT_S = 60.0


class NoDeploymentError(LookupError):
    """None of the models tierwise chose is a model group in the LiteLLM router."""


def router_model_groups(router: Any) -> set[str]:
    """The `model_name`s of a litellm.Router (plus its model group aliases)."""
    names = {str(d.get("model_name")) for d in getattr(router, "model_list", []) or []}
    names.update(str(alias) for alias in (getattr(router, "model_group_alias", None) or {}))
    return names


def model_chain(
    routing: Routing, known_groups: Iterable[str] | None, model_groups: Mapping[str, str]
) -> list[str]:
    """LiteLLM model groups to try, in order, for a tierwise decision."""
    known = None if known_groups is None else set(known_groups)
    chain: list[str] = []
    for model in routing.models:
        group = model_groups.get(model, model)
        if (known is None or group in known) and group not in chain:
            chain.append(group)
    if not chain:
        raise NoDeploymentError(
            f"tierwise chose {list(routing.models)} (tier {routing.tier}) but the LiteLLM router has no model "
            f"group of those names (it has {sorted(known or [])}); name the model_list entries after the "
            "policy's models or pass model_groups={policy model: LiteLLM model_name}"
        )
    return chain


def is_private(routing: Routing, client: TierwiseClient | AsyncTierwiseClient | None) -> bool:
    """Whether the decision sends the request to the private tier (personal data or secrets)."""
    private_tier = client.upward.private_tier if client is not None else None
    return PRIVATE_DATA in routing.reasons or (private_tier is not None and routing.tier == private_tier)


def checked_private_bounds(retries: int, timeout_s: float) -> tuple[int, float]:
    """(private_retries, private_timeout_s), validated: retries an int >= 0, a finite timeout > 0."""
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"private_retries must be an int >= 0, got {retries!r}")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < math.inf:
        raise ValueError(f"private_timeout_s must be a number of seconds > 0, got {timeout_s!r}")
    return retries, float(timeout_s)


def _at_most(requested: Any, limit: float, allow_zero: bool) -> Any:
    """The request's own value when it is a number within the limit (a tighter bound), else the limit."""
    if isinstance(requested, bool) or not isinstance(requested, (int, float)):
        return limit
    lowest_ok = requested >= 0 if allow_zero else requested > 0  # a timeout of 0 means "none" to LiteLLM
    return requested if lowest_ok and requested <= limit else limit


def fail_closed_fields(
    request: Mapping[str, Any], retries: int = PRIVATE_RETRIES, timeout_s: float = PRIVATE_TIMEOUT_S
) -> dict[str, Any]:
    """The LiteLLM request fields that bound how long a private request takes to fail: the Router's
    retries (`num_retries`, which overrides the router's and the deployment's; the Router sleeps a
    back-off after each failed attempt once it retries at all) and each attempt's timeout (`timeout`,
    and `stream_timeout`, which a deployment's own would otherwise override for a stream). A tighter
    value the request already carries is kept. (`max_retries`, the provider SDK's retries, is left
    alone: the Router sets it to 0 and does not retry through it.)"""
    return {
        "num_retries": int(_at_most(request.get("num_retries"), retries, allow_zero=True)),
        "timeout": _at_most(request.get("timeout"), timeout_s, allow_zero=False),
        "stream_timeout": _at_most(request.get("stream_timeout"), timeout_s, allow_zero=False),
    }


def routed_chain(
    routing: Routing,
    known_groups: Iterable[str] | None,
    model_groups: Mapping[str, str],
    client: TierwiseClient | AsyncTierwiseClient | None,
    request: Mapping[str, Any] | None = None,
    private_retries: int = PRIVATE_RETRIES,
    private_timeout_s: float = PRIVATE_TIMEOUT_S,
) -> tuple[list[str], dict[str, Any]]:
    """The chain of model groups and the request fields that make LiteLLM follow it; a private
    request's fallbacks of every kind stay inside the private tier, and its retries and timeouts are
    bounded (`fail_closed_fields`; `request`: the call's own fields)."""
    private = is_private(routing, client)
    try:
        chain = model_chain(routing, known_groups, model_groups)
    except NoDeploymentError as err:
        if private:
            raise PrivateDataUnroutableError(
                f"the request carries personal data or secrets, so it may only go to the private tier "
                f"{routing.tier!r} ({', '.join(routing.models)}), and the LiteLLM router has no model group "
                "for it: add a model_list entry named after the private tier's model (policy.yaml "
                "private_tier.models; see serving/tierwise/gateway/LITELLM.md) or map it with model_groups="
            ) from err
        raise
    fields: dict[str, Any] = {"fallbacks": chain[1:]}
    if private:
        fields["context_window_fallbacks"] = []
        fields["content_policy_fallbacks"] = []
        fields.update(fail_closed_fields(request or {}, private_retries, private_timeout_s))
    return chain, fields


def annotate(metadata: Mapping[str, Any] | None, routing: Routing, chain: Sequence[str]) -> dict[str, Any]:
    """Request metadata with the decision, so LiteLLM logs and callbacks see it."""
    out = dict(metadata or {})
    out["tierwise"] = {
        "tier": routing.tier,
        "request_id": routing.request_id,
        "model_version": routing.model_version,
        "reasons": list(routing.reasons),
        "failed_upward": routing.failed_upward,
        "chain": list(chain),
    }
    return out
