"""Where a request goes when tierwise cannot be asked: the policy's top tier, or its private tier
for a request the local privacy rule flags (never a public model for personal data: fail closed)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierwise.core.privacy import PRIVATE_DATA
from tierwise.core.request_text import request_strings as core_request_strings
from tierwise.gateway.wire import PrivateDataUnroutableError, Routing

logger = logging.getLogger("tierwise.client")


@dataclass(frozen=True)
class UpwardRoute:
    tier: str
    models: tuple[str, ...]
    private_tier: str | None = None  # where requests with personal data go when tierwise cannot answer
    private_models: tuple[str, ...] = ()


def upward_route(
    policy_file: Path | None,
    upward_tier: str | None,
    upward_models: Sequence[str] | None,
    private_tier: str | None = None,
    private_models: Sequence[str] | None = None,
) -> UpwardRoute:
    """The fail-upward tier and the private tier: given here, or read from the policy file."""
    private = (private_tier, tuple(private_models)) if private_tier and private_models else None
    if upward_tier and upward_models and private is not None:
        return UpwardRoute(upward_tier, tuple(upward_models), *private)
    # Imported here: a client given its tiers needs no policy file (nor PyYAML's parse of one).
    from tierwise.core.policy_file import DEFAULT_POLICY_FILE, load_policy

    policy = load_policy(policy_file or DEFAULT_POLICY_FILE)
    top = policy.tiers[-1]
    if private is None and policy.private_tier is not None:
        private = (policy.private_tier.name, policy.private_tier.models)
    private_name, private_list = private or (None, ())
    return UpwardRoute(
        upward_tier or top.name, tuple(upward_models or top.models), private_name, tuple(private_list)
    )


def request_strings(
    text: str | None,
    messages: Sequence[Mapping[str, Any]] | None,
    tools: Sequence[Any] | None = None,
    functions: Sequence[Any] | None = None,
    response_format: Mapping[str, Any] | None = None,
) -> str:
    """What the local privacy rule scans when tierwise cannot be asked: the same strings the service
    scans (`tierwise.core.request_text.request_strings`), from the gateway's arguments."""
    extra = {
        "tools": list(tools or []),
        "functions": list(functions or []),
        "response_format": response_format,
    }
    if text is not None:
        return core_request_strings({"text": text, **extra})
    return core_request_strings({"messages": list(messages or []), **extra})


def failed_upward(
    upward: UpwardRoute, reason: str, request_id: str | None, private_kinds: Sequence[str] = ()
) -> Routing:
    """The route when tierwise could not be asked: the private tier for a request with personal
    data (`private_kinds`, from the local privacy rule), else the top tier."""
    if private_kinds:
        if upward.private_tier is None or not upward.private_models:
            raise PrivateDataUnroutableError(
                f"tierwise could not be asked ({reason}) and the request carries "
                f"{', '.join(private_kinds)}, but no private tier is configured, so it is not sent to a "
                "public model; add `private_tier` to the policy (TIERWISE_POLICY_FILE / policy_file=) "
                "or pass private_tier= and private_models= to the client"
            )
        logger.warning(
            "tierwise unavailable, routing to the private tier (%s found): %s",
            ", ".join(private_kinds),
            reason,
        )
        return Routing(
            tier=upward.private_tier,
            model=upward.private_models[0],
            fallbacks=upward.private_models[1:],
            request_id=request_id,
            reasons=(PRIVATE_DATA,),
            failed_upward=True,
            error=reason,
        )
    logger.warning("tierwise unavailable, routing to the top tier: %s", reason)
    return Routing(
        tier=upward.tier,
        model=upward.models[0],
        fallbacks=upward.models[1:],
        request_id=request_id,
        failed_upward=True,
        error=reason,
    )
