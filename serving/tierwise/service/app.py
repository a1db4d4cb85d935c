"""The HTTP service: POST /classify and /classify/batch, feedback, health, readiness, metrics, model.

`create_app(settings, classifier_factory)` builds the FastAPI app; the model is loaded once in
`lifespan` and warmed up before /readyz says ready. The pieces: `state.py` (what a running service
holds), `reloader.py` (start-up and hot reload), `dependencies.py` (what routes get, API keys),
`middleware.py` (request id, body limits, access log), `errors.py` (error bodies) and `routes/`
(one module per OpenAPI tag). `server.py` runs it under uvicorn (`python -m tierwise.service`).

A model folder that cannot be loaded stops start-up: the log line `cannot start` says what is wrong
and what to do, and the process exits non-zero (uvicorn's startup-failure code 3; `python -m
tierwise.service` checks the folder first and exits 2 with that line), so a supervisor or
orchestrator sees the failure instead of a server that never becomes ready.

Hot reload: `POST /admin/reload` (needs TIERWISE_ADMIN_TOKEN) or SIGHUP to a single-process server
loads the model folder again, warms it up, swaps it in, and lets requests already on the old model
finish before closing it; a folder that fails to load leaves the old model serving. With several
workers, SIGHUP the main process: uvicorn replaces the workers one at a time, each new one ready
before the old one stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from tierwise.evidence.segment_control import open_segment_control
from tierwise.evidence.shadow import close_shadow, start_shadow
from tierwise.service.classifier import ClassifierFactory, load_tier_classifier
from tierwise.service.errors import add_error_handlers
from tierwise.service.feedback import close_recorder, open_recorder, segment_evidence_reader
from tierwise.service.metrics import ServiceMetrics, mark_dead_workers, mark_this_worker_dead
from tierwise.service.middleware import RequestContextMiddleware
from tierwise.service.reloader import ModelReloader
from tierwise.service.routes import ROUTERS
from tierwise.service.settings import Settings, get_settings
from tierwise.service.state import Services, attach_controller, startup_error_message
from tierwise.service.tracing import fastapi_telemetry, open_tracing

logger = logging.getLogger("tierwise.service")


async def start_services(
    app: FastAPI, settings: Settings, factory: ClassifierFactory, metrics: ServiceMetrics
) -> tuple[ModelReloader, Services]:
    """Load the model, open the decision log, the per-segment controller and the shadow evaluator; log `cannot start` and raise
    when any of them fails (what was opened is closed again)."""
    reloader = ModelReloader(app, settings, factory, metrics)
    try:
        services = await reloader.start()
    except Exception as err:
        logger.error(
            "cannot start: %s",
            startup_error_message(err, settings),
            extra={"model_dir": str(settings.model_dir), "policy_file": str(settings.policy_file)},
        )
        raise
    try:
        await open_evidence(app, settings, services, metrics, reloader)
    except Exception as err:
        logger.error("cannot start: %s", err, extra={"decision_db": settings.decision_db})
        await reloader.close()
        await close_evidence(app)
        raise
    return reloader, services


async def open_evidence(
    app: FastAPI, settings: Settings, services: Services, metrics: ServiceMetrics, reloader: ModelReloader
) -> None:
    """The decision log, the per-segment controller (routing reads it) and the shadow evaluator."""
    app.state.decision_recorder = await asyncio.to_thread(
        open_recorder, settings, metrics.observe_decision_log
    )
    controller = await asyncio.to_thread(
        open_segment_control,
        settings.policy_file,
        services.policy,
        segment_evidence_reader(app.state.decision_recorder),
        metrics.observe_segments,
    )
    app.state.segment_control = reloader.controller = controller
    attach_controller(services, controller)
    if controller is not None:
        await asyncio.to_thread(controller.start)
    app.state.shadow = await asyncio.to_thread(
        start_shadow, settings.policy_file, services.policy, app.state.decision_recorder, metrics, controller
    )


async def close_evidence(app: FastAPI) -> None:
    """Close what `open_evidence` opened (any part of it), the shadow first: it writes to the log."""
    await asyncio.to_thread(close_shadow, getattr(app.state, "shadow", None))
    controller = getattr(app.state, "segment_control", None)
    if controller is not None:
        await asyncio.to_thread(controller.close)
    await asyncio.to_thread(close_recorder, getattr(app.state, "decision_recorder", None))


async def stop_services(app: FastAPI, reloader: ModelReloader) -> None:
    await reloader.close()
    await close_evidence(app)
    if app.state.tracing is not None:
        await asyncio.to_thread(app.state.tracing.close)
    mark_this_worker_dead()


@asynccontextmanager
async def lifespan(
    app: FastAPI, settings: Settings, factory: ClassifierFactory, metrics: ServiceMetrics
) -> AsyncIterator[None]:
    """The model is loaded once, here, and closed when the server stops."""
    started = time.perf_counter()
    mark_dead_workers()
    reloader, services = await start_services(app, settings, factory, metrics)
    app.state.reloader = reloader
    sighup = reloader.install_sighup()
    logger.info(
        "ready",
        extra={
            "model_version": services.classifier.version,
            "model_dir": str(Path(settings.model_dir)),
            "policy_file": str(settings.policy_file),
            "micro_batching": settings.micro_batching,
            "api_keys": bool(settings.api_key_list()),
            "admin_endpoints": settings.admin_token is not None,
            "reload_on_sighup": sighup,
            "tracing": app.state.tracing is not None,
            "startup_ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    try:
        yield
    finally:
        if sighup:
            reloader.remove_sighup()
        await stop_services(app, reloader)


def create_app(
    settings: Settings | None = None,
    classifier_factory: ClassifierFactory | None = None,
    tracer_provider: Any = None,
) -> FastAPI:
    """The service. `classifier_factory(settings)` defaults to loading `settings.model_dir`;
    `tracer_provider`: the OpenTelemetry provider for TIERWISE_TRACING (default: see
    serving/tierwise/service/tracing.py). uvicorn's workers call it with no arguments
    ("tierwise.service.app:create_app", factory=True): the settings then come from TIERWISE_*."""
    settings = settings or get_settings()
    metrics = ServiceMetrics()
    tracing = open_tracing(settings, tracer_provider)  # FastAPI needs the provider when it is built
    factory = classifier_factory or load_tier_classifier
    app = FastAPI(
        title="tierwise",
        summary="Route each LLM request to the cheapest model tier that can handle it.",
        version=version("tierwise"),
        lifespan=partial(lifespan, settings=settings, factory=factory, metrics=metrics),
        telemetry=fastapi_telemetry(tracing),
    )
    app.state.metrics = metrics
    app.state.tracing = tracing
    app.state.settings = settings
    add_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    # Metrics label requests by path for these; any other path is counted as "other" (bounded labels).
    endpoints = {route.path for router in ROUTERS for route in router.routes if isinstance(route, APIRoute)}
    endpoints.add("/docs")
    app.add_middleware(
        RequestContextMiddleware, max_body_bytes=settings.max_body_bytes, metrics=metrics, endpoints=endpoints
    )
    return app
