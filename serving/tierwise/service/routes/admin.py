"""The `admin` tag: POST /admin/reload (needs TIERWISE_ADMIN_TOKEN, and an API key when keys are set)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fastapi import APIRouter, Request

from tierwise.service.dependencies import AdminTokenDep, ApiKeyDep
from tierwise.service.errors import api_error, error_responses
from tierwise.service.reloader import ModelReloader
from tierwise.service.schemas import ReloadRequest, ReloadResponse, WorkerStatus
from tierwise.service.state import Services, startup_error_message

logger = logging.getLogger("tierwise.service")

router = APIRouter(tags=["admin"])


@router.post(
    "/admin/reload",
    response_model=ReloadResponse,
    responses=error_responses(400, 401, 403, 409, 413, 422, 503),
    dependencies=[ApiKeyDep, AdminTokenDep],
)
async def admin_reload(request: Request, body: ReloadRequest | None = None) -> ReloadResponse:
    """Load the model folder again (or `model_dir`) and swap it in, in every worker: this one first
    (a folder that cannot be loaded changes nothing, 409), then the others; the answer waits until
    they all serve it (`all_workers_agree`), at most TIERWISE_WORKER_START_TIMEOUT_SECONDS."""
    reloader: ModelReloader | None = getattr(request.app.state, "reloader", None)
    if reloader is None or getattr(request.app.state, "services", None) is None:
        raise api_error(503, "not_ready", "the model is still loading; retry shortly or check /readyz")
    model_dir = Path(body.model_dir) if body and body.model_dir else None
    target = model_dir or reloader.settings.model_dir
    try:
        old, new = await reloader.reload_everywhere(model_dir)
    except Exception as err:
        current: Services = request.app.state.services
        logger.error("reload failed, still serving the previous model", exc_info=err)
        raise api_error(
            409,
            "reload_failed",
            f"could not load {target}: {startup_error_message(err, reloader.settings)}; "
            f"still serving {current.classifier.version}",
            "model_dir",
        ) from err
    statuses, agree = await reloader.wait_for_workers(reloader.settings.worker_start_timeout_seconds)
    if not agree:
        logger.warning("not every worker serves the reloaded model yet", extra={"workers": statuses})
    return ReloadResponse(
        status="reloaded",
        model_version=new.classifier.version,
        previous_model_version=old.classifier.version,
        model_dir=str(target),
        worker_pid=os.getpid(),
        generation=reloader.generation,
        workers=[WorkerStatus(**status) for status in statuses],
        all_workers_agree=agree,
    )
