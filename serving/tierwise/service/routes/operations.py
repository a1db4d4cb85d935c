"""The `operations` tag: liveness, readiness, Prometheus metrics and the model being served.

/healthz, /readyz and /metrics stay open for probes and scrapers; /model needs an API key when keys
are configured.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from tierwise.service.dependencies import ApiKeyDep, ServicesDep
from tierwise.service.errors import error_responses
from tierwise.service.metrics import CONTENT_TYPE, ServiceMetrics
from tierwise.service.reloader import ModelReloader
from tierwise.service.schemas import HealthResponse
from tierwise.service.state import Services

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=HealthResponse)
async def healthz() -> HealthResponse:
    """The process is alive."""
    return HealthResponse(status="ok")


@router.get("/readyz", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
async def readyz(request: Request) -> JSONResponse:
    """The model is loaded and warmed up."""
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None or not services.ready:
        return JSONResponse(HealthResponse(status="not_ready").model_dump(), status_code=503)
    return JSONResponse(
        HealthResponse(status="ready", model_version=services.classifier.version).model_dump()
    )


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> PlainTextResponse:
    """Prometheus metrics."""
    service_metrics: ServiceMetrics = request.app.state.metrics
    return PlainTextResponse(service_metrics.exposition(), media_type=CONTENT_TYPE)


@router.get("/model", responses=error_responses(401, 503), dependencies=[ApiKeyDep])
async def model(request: Request, services: ServicesDep) -> dict[str, Any]:
    """The model manifest and the routing policy's tiers; `workers`: the version each worker
    serves (they differ for a moment after a reload; `workers_agree` says when they are done)."""
    policy = services.policy
    reloader: ModelReloader | None = getattr(request.app.state, "reloader", None)
    workers = reloader.worker_statuses() if reloader is not None else []
    return {
        "model_version": services.classifier.version,
        "workers": workers,
        "workers_agree": len({worker["model_version"] for worker in workers}) <= 1,
        "tiers": list(policy.tier_names),
        "private_tier": policy.private_tier.name if policy.private_tier else None,
        "escalation_q": policy.escalation_q
        if policy.escalation_q is not None
        else services.classifier.manifest.escalation_q,
        "tier_offsets": list(services.classifier.manifest.tier_offsets),
        "deadline_ms": services.router.deadline_ms,
        "manifest": services.classifier.manifest.raw,
        "canary": services.canary.info() if services.canary is not None else None,
    }
