"""FastAPI dependencies: what a route gets from the app (`ServicesDep`, `ContextDep`, ...) and the
API-key and admin-token checks (`ApiKeyDep`, `AdminTokenDep`).

API keys (TIERWISE_API_KEYS, optional) guard /classify, /classify/batch, /feedback, /model and /admin/*;
health, readiness and metrics stay open. Keys and tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from tierwise.evidence.shadow import ShadowEvaluator
from tierwise.service.errors import api_error
from tierwise.service.settings import Settings
from tierwise.service.state import RequestContext, Services
from tierwise.service.tracing import Tracing

if TYPE_CHECKING:  # the decision log needs the optional `feedback` extra (SQLAlchemy) at run time
    from tierwise.evidence.decision_log import DecisionRecorder


async def get_services(request: Request) -> AsyncIterator[Services]:
    """The current model and policy; counted in flight so a reload can wait for the old model."""
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None or not services.ready:
        raise api_error(503, "not_ready", "the model is still loading; retry shortly or check /readyz")
    services.in_flight += 1
    try:
        yield services
    finally:
        services.in_flight -= 1


def get_context(request: Request) -> RequestContext:
    context = getattr(request.state, "context", None)
    if context is None:  # the middleware always sets it; this keeps the route safe without it
        context = RequestContext(uuid.uuid4().hex, None, None, time.perf_counter())
    return context


def get_recorder(request: Request) -> DecisionRecorder | None:
    """The decision log's writer, None when recording is off."""
    return getattr(request.app.state, "decision_recorder", None)


def get_shadow(request: Request) -> ShadowEvaluator | None:
    """The shadow evaluator, None when the policy has no shadow share."""
    return getattr(request.app.state, "shadow", None)


def get_tracing(request: Request) -> Tracing | None:
    """The service's OpenTelemetry spans (serving/tierwise/service/tracing.py), None when TIERWISE_TRACING is off."""
    return getattr(request.app.state, "tracing", None)


ServicesDep = Annotated[Services, Depends(get_services)]
ContextDep = Annotated[RequestContext, Depends(get_context)]
RecorderDep = Annotated["DecisionRecorder | None", Depends(get_recorder)]
ShadowDep = Annotated[ShadowEvaluator | None, Depends(get_shadow)]
TracingDep = Annotated[Tracing | None, Depends(get_tracing)]

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="one of TIERWISE_API_KEYS, when keys are set"
)
bearer_header = HTTPBearer(auto_error=False, description="an API key as a bearer token")
admin_token_header = APIKeyHeader(name="X-Admin-Token", auto_error=False, description="TIERWISE_ADMIN_TOKEN")


def secret_matches(presented: str, secrets: tuple[str, ...]) -> bool:
    """Whether `presented` equals one of `secrets`, comparing each in constant time."""
    matched = False
    for secret in secrets:  # no early exit: the time does not say which key (or how much) matched
        matched |= hmac.compare_digest(presented.encode("utf-8"), secret.encode("utf-8"))
    return matched


def require_api_key(
    request: Request,
    api_key: Annotated[str | None, Depends(api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_header)],
) -> None:
    """Let the request through when no keys are configured or it carries a configured key."""
    settings: Settings = request.app.state.settings
    keys = settings.api_key_list()
    if not keys:
        return
    presented = api_key if api_key else (bearer.credentials if bearer else None)
    if not presented:
        raise api_error(
            401,
            "missing_api_key",
            "this endpoint needs an API key: send it in the X-API-Key header or as "
            "'Authorization: Bearer <key>' (keys are configured by TIERWISE_API_KEYS)",
            "X-API-Key",
        )
    if not secret_matches(presented, keys):
        raise api_error(
            401,
            "invalid_api_key",
            "the API key is not one of TIERWISE_API_KEYS; check the key you were given",
            "X-API-Key",
        )


def require_admin_token(
    request: Request, admin_token: Annotated[str | None, Depends(admin_token_header)]
) -> None:
    settings: Settings = request.app.state.settings
    if settings.admin_token is None or not settings.admin_token.get_secret_value():
        raise api_error(
            403,
            "admin_disabled",
            "admin endpoints are disabled; set TIERWISE_ADMIN_TOKEN on the server to enable them",
            "X-Admin-Token",
        )
    if not admin_token or not secret_matches(admin_token, (settings.admin_token.get_secret_value(),)):
        raise api_error(
            401,
            "invalid_admin_token",
            "send the admin token (TIERWISE_ADMIN_TOKEN) in the X-Admin-Token header",
            "X-Admin-Token",
        )


ApiKeyDep = Depends(require_api_key)
AdminTokenDep = Depends(require_admin_token)
