"""The HTTP service: POST /classify and /classify/batch, health, readiness, metrics, model.

`create_app(settings, classifier_factory)` builds the FastAPI app; the model is loaded once in
`lifespan` and warmed up before /readyz says ready. Bad input gets a 4xx whose message names the
field and the limit; classifier failures route upward (200, `classifier_unavailable`); anything
unexpected gets a JSON 503, never a bare 500.

A model folder that cannot be loaded stops start-up: the log line `cannot start` says what is wrong
and what to do, and the process exits non-zero (uvicorn's startup-failure code 3), so a supervisor
or orchestrator sees the failure instead of a server that never becomes ready.

Hot reload: `POST /admin/reload` (needs TIERWISE_ADMIN_TOKEN) or SIGHUP to a single-process server
loads the model folder again, warms it up, swaps it in, and lets requests already on the old model
finish before closing it; a folder that fails to load leaves the old model serving. With several
workers, SIGHUP the main process: uvicorn replaces the workers one at a time, each new one ready
before the old one stops.

API keys (TIERWISE_API_KEYS, optional) guard /classify, /classify/batch, /feedback, /model and /admin/*;
health, readiness and metrics stay open. Keys and tokens are compared in constant time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from tierwise.core.policy import (
    Decision,
    Policy,
    PolicyError,
    RoutingInput,
    UnknownTierError,
    load_policy,
    with_private_data,
)
from tierwise.core.request_text import ClassifierInput, RequestTextError, request_input
from tierwise.ops.feedback import (
    FEEDBACK_OPENAPI,
    FeedbackError,
    FeedbackResponse,
    close_recorder,
    open_recorder,
    record_feedback,
    submit_decision,
)
from tierwise.ops.shadow import close_shadow, offer_shadow, start_shadow
from tierwise.service import worker_sync
from tierwise.service.batcher import DirectScorer, MicroBatcher, Scorer
from tierwise.service.canary import build_canary, canary_info, decide_split
from tierwise.service.metrics import (
    CONTENT_TYPE,
    ServiceMetrics,
    mark_dead_workers,
    mark_this_worker_dead,
    prepare_multiprocess_dir,
    remove_multiprocess_dir,
)
from tierwise.service.routing import Router
from tierwise.service.schemas import (
    BatchClassifyRequest,
    BatchClassifyResponse,
    ClassifyRequest,
    ClassifyResponse,
    ErrorResponse,
    HealthResponse,
    ReloadRequest,
    ReloadResponse,
    WorkerStatus,
)
from tierwise.service.score_cache import ScoreCache
from tierwise.service.settings import Settings, get_settings
from tierwise.service.tracing import Tracing, fastapi_telemetry, open_tracing

logger = logging.getLogger("tierwise.service")
access_logger = logging.getLogger("tierwise.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
_TRACEPARENT_RE = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_BODY_METHODS = {"POST", "PUT", "PATCH"}
WARM_UP_TEXTS = [
    "hi",
    "Summarise the following paragraph in one sentence for a product update email to customers.",
    " ".join(["Prove that the algorithm terminates and analyse its complexity."] * 40),
]


class ManifestLike(Protocol):
    raw: dict[str, Any]
    escalation_q: float
    tiers: tuple[str, ...]


class ClassifierLike(Protocol):
    """What the service needs from `tierwise.core.classifier.TierClassifier`."""

    @property
    def manifest(self) -> ManifestLike: ...

    @property
    def tiers(self) -> tuple[str, ...]: ...

    @property
    def version(self) -> str: ...

    def predict_proba(self, texts: list[ClassifierInput]) -> tuple[np.ndarray, list[int]]: ...


ClassifierFactory = Callable[[Settings], ClassifierLike]


def load_tier_classifier(settings: Settings) -> ClassifierLike:
    from tierwise.core.classifier import TierClassifier  # onnxruntime is imported only when serving

    return TierClassifier(settings.model_dir, intra_op_threads=settings.onnx_threads)


@dataclass
class Services:
    settings: Settings
    classifier: ClassifierLike
    policy: Policy
    scorer: Scorer
    router: Router
    metrics: ServiceMetrics
    ready: bool = False
    in_flight: int = 0  # requests using this classifier now; a reload waits for 0 before closing it
    canary: Any = None  # tierwise.service.canary.Canary when the policy names a candidate model


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    trace_id: str | None
    traceparent: str | None
    started: float


def api_error(status: int, error_type: str, message: str, field: str | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail={"type": error_type, "message": message, "field": field})


def error_body(
    error_type: str, message: str, field: str | None = None, request_id: str | None = None
) -> dict[str, Any]:
    return ErrorResponse.model_validate(
        {"error": {"type": error_type, "message": message, "field": field}, "request_id": request_id}
    ).model_dump()


# ---------------------------------------------------------------------------------------------
# ASGI middleware: request id, traceparent, body limits, UTF-8, access log, last-resort errors.
# ---------------------------------------------------------------------------------------------


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


async def _send_json(
    send: Send, status: int, body: dict[str, Any], request_id: str, close: bool = False
) -> None:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"x-request-id", request_id.encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


# An oversized body is read and discarded before the 413 is sent: a client that writes its whole body
# before reading (urllib, requests, most SDKs) would otherwise get a broken pipe or a reset when the
# server closes with unread bytes, and never see the answer. Draining stops after this many times the
# limit or these seconds; the 413 then closes the connection.
DRAIN_LIMIT_FACTOR = 16
DRAIN_SECONDS = 10.0


class RequestContextMiddleware:
    def __init__(
        self, app: ASGIApp, max_body_bytes: int, metrics: ServiceMetrics, endpoints: set[str]
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.endpoints = endpoints

    def _too_large(self, size: str) -> dict[str, Any]:
        limit = self.max_body_bytes
        return {
            "type": "body_too_large",
            "message": f"request body is {size} bytes; the limit is {limit} bytes ({limit / 1048576:g} MiB), "
            "set by TIERWISE_MAX_BODY_BYTES: send shorter text or fewer batch items",
            "field": "body",
        }

    async def _read_body(self, receive: Receive) -> tuple[bytes | None, str | None]:
        """The whole body, or None and the size read so far when it exceeds the limit."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(chunks), None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None, f"more than {self.max_body_bytes}"
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), None

    async def _discard_rest(self, receive: Receive, already: int) -> bool:
        """Read and drop the rest of an oversized body; True when it ended within the drain bounds
        (the connection can then stay open), False when it was cut short."""
        drained, deadline = already, time.monotonic() + DRAIN_SECONDS
        while drained <= DRAIN_LIMIT_FACTOR * self.max_body_bytes:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                message = await asyncio.wait_for(receive(), remaining)
            except TimeoutError:
                return False
            if message["type"] == "http.disconnect":
                return False
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        supplied_id = _header(scope, b"x-request-id")
        request_id = supplied_id if supplied_id and _REQUEST_ID_RE.match(supplied_id) else uuid.uuid4().hex
        traceparent = _header(scope, b"traceparent")
        trace_match = _TRACEPARENT_RE.match(traceparent.strip().lower()) if traceparent else None
        trace_id = trace_match.group(2) if trace_match else None
        scope.setdefault("state", {})
        scope["state"]["context"] = RequestContext(
            request_id, trace_id, traceparent if trace_match else None, started
        )
        path = scope.get("path", "")
        endpoint = path if path in self.endpoints else "other"
        status_holder = {"status": 0}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        async def respond_error(status: int, detail: dict[str, Any], close: bool = False) -> None:
            status_holder["status"] = status
            await _send_json(send, status, {"error": detail, "request_id": request_id}, request_id, close)

        try:
            if scope.get("method") in _BODY_METHODS:
                declared = _header(scope, b"content-length")
                if (
                    declared is not None
                    and declared.strip().isdigit()
                    and int(declared) > self.max_body_bytes
                ):
                    # A client waiting for `100 Continue` has not sent the body: answer at once (reading
                    # would tell uvicorn to invite it). Any other is drained first (see DRAIN_SECONDS).
                    waiting = (_header(scope, b"expect") or "").strip().lower() == "100-continue"
                    ended = False if waiting else await self._discard_rest(receive, 0)
                    await respond_error(413, self._too_large(declared.strip()), close=not ended)
                    return
                body, oversize = await self._read_body(receive)
                if body is None:
                    ended = await self._discard_rest(receive, self.max_body_bytes)
                    await respond_error(413, self._too_large(oversize or "?"), close=not ended)
                    return
                try:
                    body.decode("utf-8")
                except UnicodeDecodeError as err:
                    detail = {
                        "type": "invalid_encoding",
                        "message": f"request body is not valid UTF-8 (bad byte at offset {err.start}); "
                        "send JSON encoded as UTF-8",
                        "field": "body",
                    }
                    await respond_error(400, detail)
                    return
                replayed = False

                async def replay() -> Message:
                    nonlocal replayed
                    if replayed:
                        return await receive()
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}

                await self.app(scope, replay, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        except Exception as err:  # last resort: a JSON 503 instead of a bare 500
            logger.error("unhandled error", exc_info=err, extra={"request_id": request_id, "path": path})
            if status_holder["status"] == 0:
                detail = {
                    "type": "internal_error",
                    "message": f"internal error ({type(err).__name__}); route this request to the top tier "
                    f"and report request id {request_id}",
                    "field": None,
                }
                await respond_error(503, detail)
        finally:
            seconds = time.perf_counter() - started
            status = status_holder["status"]
            self.metrics.http_requests.inc(endpoint, str(status))
            self.metrics.latency.observe(seconds, endpoint)
            access_logger.log(
                logging.INFO if status >= 400 else logging.DEBUG,
                "http",
                extra={
                    "request_id": request_id,
                    "trace_id": trace_id,
                    "method": scope.get("method"),
                    "path": path,
                    "status": status,
                    "latency_ms": round(seconds * 1000, 3),
                },
            )


# ---------------------------------------------------------------------------------------------
# Error handlers: every error body is {"error": {"type", "message", "field"}, "request_id"}.
# ---------------------------------------------------------------------------------------------


def _request_id(request: Request) -> str | None:
    context = getattr(request.state, "context", None)
    return context.request_id if context else None


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) if parts else "body"


def _describe(error: dict[str, Any]) -> tuple[str, str]:
    loc = tuple(error.get("loc", ()))
    field = _field_name(loc)
    kind = error.get("type", "")
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        message = (
            "unknown field; allowed: text, messages, min_tier, max_tier, route, metadata (items for batch)"
        )
    elif kind == "missing" and field == "body":
        message = "a JSON object body is required"
    elif kind in {"model_attributes_type", "dict_type", "model_type"} and field == "body":
        message = "body must be a JSON object sent with Content-Type: application/json"
    elif kind == "string_type":
        message = "must be a string"
    return field, message


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    errors = list(exc.errors()) if isinstance(exc, RequestValidationError) else []
    if errors and errors[0].get("type") == "json_invalid":
        ctx = errors[0].get("ctx") or {}
        position = errors[0].get("loc", ("body", "?"))[-1]
        message = f"body is not valid JSON: {ctx.get('error', 'decode error')} at character {position}"
        return JSONResponse(
            error_body("invalid_json", message, "body", _request_id(request)), status_code=400
        )
    described = [_describe(e) for e in errors] or [("body", "invalid request")]
    message = "; ".join(f"{field}: {text}" for field, text in described[:5])
    if len(described) > 5:
        message += f"; and {len(described) - 5} more"
    body = error_body("invalid_request", message, described[0][0], _request_id(request))
    return JSONResponse(body, status_code=422)


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail
    if isinstance(detail, dict):
        body = error_body(detail["type"], detail["message"], detail.get("field"), _request_id(request))
    else:
        error_type = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        body = error_body(
            error_type, f"{detail}: {request.method} {request.url.path}", None, _request_id(request)
        )
    return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error", exc_info=exc, extra={"request_id": _request_id(request)})
    message = f"internal error ({type(exc).__name__}); route this request to the top tier"
    return JSONResponse(error_body("internal_error", message, None, _request_id(request)), status_code=503)


# ---------------------------------------------------------------------------------------------
# Dependencies
# ---------------------------------------------------------------------------------------------


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


def get_recorder(request: Request) -> Any:
    """The decision log's writer (`tierwise.ops.decision_log.DecisionRecorder`), None when recording is off."""
    return getattr(request.app.state, "decision_recorder", None)


def get_shadow(request: Request) -> Any:
    """The shadow evaluator (`tierwise.ops.shadow.ShadowEvaluator`), None when the policy has no shadow share."""
    return getattr(request.app.state, "shadow", None)


def get_tracing(request: Request) -> Tracing | None:
    """The service's OpenTelemetry spans (serving/tierwise/service/tracing.py), None when TIERWISE_TRACING is off."""
    return getattr(request.app.state, "tracing", None)


ServicesDep = Annotated[Services, Depends(get_services)]
ContextDep = Annotated[RequestContext, Depends(get_context)]
RecorderDep = Annotated[Any, Depends(get_recorder)]
ShadowDep = Annotated[Any, Depends(get_shadow)]
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


# ---------------------------------------------------------------------------------------------
# Service construction
# ---------------------------------------------------------------------------------------------


def build_services(
    settings: Settings, classifier_factory: ClassifierFactory, metrics: ServiceMetrics
) -> Services:
    """Load the policy and the model and wire the scorer; raises PolicyError or ModelFolderError."""
    policy = load_policy(settings.policy_file)
    classifier = classifier_factory(settings)
    policy.check_model_tiers(classifier.tiers)
    scorer: Scorer
    if settings.micro_batching:
        scorer = MicroBatcher(
            classifier.predict_proba,
            max_batch_size=settings.micro_batch_max_size,
            max_wait_ms=settings.micro_batch_max_wait_ms,
            on_batch=metrics.observe_batch,
        )
    else:
        scorer = DirectScorer(classifier.predict_proba, on_batch=metrics.observe_batch)
    cache = (
        ScoreCache(settings.score_cache_size, metrics.observe_score_cache)
        if settings.score_cache_size
        else None
    )
    router = Router.for_classifier(policy, scorer, classifier, settings, cache=cache)
    metrics.model.set(version=classifier.version, tiers=",".join(classifier.tiers))
    canary = build_canary(policy, settings, classifier_factory, metrics)
    return Services(settings, classifier, policy, scorer, router, metrics, canary=canary)


def startup_error_message(err: Exception, settings: Settings) -> str:
    """What went wrong loading the model or policy, and what to do about it."""
    if isinstance(err, PolicyError):
        return str(err)
    if isinstance(err, ValueError):  # ModelFolderError is a ValueError
        message = str(err).rstrip()
        if "make train" not in message:
            message += (
                " Re-export the model folder with `make train` (or `make export`), or point "
                "TIERWISE_MODEL_DIR at a complete one."
            )
        return message
    return (
        f"loading the model folder {settings.model_dir} failed ({type(err).__name__}: {err}); point "
        "TIERWISE_MODEL_DIR at a folder written by `make train` (model.onnx, tokenizer.json, manifest.json)"
    )


def load_services(settings: Settings, factory: ClassifierFactory, metrics: ServiceMetrics) -> Services:
    """Build and warm up the services (blocking: run it in a thread)."""
    services = build_services(settings, factory, metrics)
    warm_up(services.classifier, settings.micro_batch_max_size)
    return services


class ModelReloader:
    """Loads the model into the app at start-up and swaps in a new one on reload, one at a time."""

    def __init__(
        self, app: FastAPI, settings: Settings, factory: ClassifierFactory, metrics: ServiceMetrics
    ) -> None:
        self.app = app
        self.settings = settings
        self.factory = factory
        self.metrics = metrics
        self._lock: asyncio.Lock | None = None
        self._background: set[asyncio.Task[Any]] = set()
        # With several workers: the folder they share, and the reload generation this one serves.
        self.shared = worker_sync.shared_dir()
        self.generation = 0

    async def _load(self, settings: Settings) -> Services:
        services = await asyncio.to_thread(load_services, settings, self.factory, self.metrics)
        if isinstance(services.scorer, MicroBatcher):
            services.scorer.start()
        services.ready = True
        return services

    async def start(self) -> Services:
        if self.shared is not None:
            # A worker started after an admin reload serves what that reload asked for.
            latest = worker_sync.read_generation(self.shared)
            self.generation = latest.number
            if latest.model_dir:
                self.settings = self.settings.model_copy(update={"model_dir": Path(latest.model_dir)})
        services = await self._load(self.settings)
        self.app.state.services = services
        if self.shared is not None:
            self._publish_status(services)
            task = asyncio.get_running_loop().create_task(self._follow_reloads(self.shared))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return services

    def _publish_status(self, services: Services) -> None:
        if self.shared is not None:
            worker_sync.write_worker_status(
                self.shared, services.classifier.version, self.generation, str(self.settings.model_dir)
            )

    def worker_statuses(self) -> list[dict[str, Any]]:
        """Which model each live worker serves (only this one with a single process)."""
        if self.shared is not None:
            return worker_sync.worker_statuses(self.shared)
        services: Services = self.app.state.services
        return [
            {
                "pid": os.getpid(),
                "model_version": services.classifier.version,
                "generation": self.generation,
                "model_dir": str(self.settings.model_dir),
            }
        ]

    async def _follow_reloads(self, folder: Path) -> None:
        """Reload whenever another worker publishes a newer generation (a cheap stat per poll)."""
        stamp = worker_sync.generation_stamp(folder)
        while True:
            await asyncio.sleep(worker_sync.POLL_SECONDS)
            current = worker_sync.generation_stamp(folder)
            if current == stamp:
                continue
            stamp = current
            wanted = worker_sync.read_generation(folder)
            if wanted.number <= self.generation:
                continue
            self.generation = wanted.number
            await self._reload_logging_errors(Path(wanted.model_dir) if wanted.model_dir else None)

    async def reload_everywhere(self, model_dir: Path | None = None) -> tuple[Services, Services]:
        """Reload this worker (raises if the folder cannot be loaded: nothing else changes), then ask
        every other worker to load the same folder."""
        old, new = await self.reload(model_dir)
        if self.shared is not None:
            # No await between the bump and the assignment: this worker's poller sees it as done.
            self.generation = worker_sync.bump_generation(self.shared, str(self.settings.model_dir)).number
            self._publish_status(new)
        return old, new

    async def wait_for_workers(self, timeout: float) -> tuple[list[dict[str, Any]], bool]:
        """(statuses, all agree) once every live worker serves this worker's generation and version."""
        deadline = time.monotonic() + timeout
        while True:
            statuses = self.worker_statuses()
            version = self.app.state.services.classifier.version
            agree = all(
                s["generation"] >= self.generation and s["model_version"] == version for s in statuses
            )
            if agree or time.monotonic() >= deadline:
                return statuses, agree
            await asyncio.sleep(0.1)

    async def reload(self, model_dir: Path | None = None) -> tuple[Services, Services]:
        """(old, new) services once the new model serves; raises if it cannot be loaded (old stays)."""
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            old: Services = self.app.state.services
            settings = self.settings
            if model_dir is not None:
                settings = settings.model_copy(update={"model_dir": Path(model_dir)})
            started = time.perf_counter()
            new = await self._load(settings)
            self.app.state.services = new
            self.settings = settings
            self._publish_status(new)
            logger.info(
                "reloaded",
                extra={
                    "model_version": new.classifier.version,
                    "previous_model_version": old.classifier.version,
                    "model_dir": str(settings.model_dir),
                    "reload_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
        await self.retire(old)
        return old, new

    async def retire(self, old: Services) -> None:
        """Close the old model once the requests using it have finished (or drain_seconds passed)."""
        old.ready = False
        deadline = time.monotonic() + self.settings.drain_seconds
        while old.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if old.in_flight > 0:
            logger.warning(
                "closing the old model with requests in flight", extra={"in_flight": old.in_flight}
            )
        await old.scorer.close()

    async def _reload_logging_errors(self, model_dir: Path | None = None) -> None:
        try:
            await self.reload(model_dir)
        except Exception as err:
            current: Services = self.app.state.services
            logger.error(
                "reload failed, still serving the previous model: %s",
                startup_error_message(err, self.settings),
                extra={"model_version": current.classifier.version},
            )

    def reload_in_background(self) -> None:
        """The SIGHUP handler."""
        task = asyncio.get_running_loop().create_task(self._reload_logging_errors())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def install_sighup(self) -> bool:
        """Reload on SIGHUP when running in the main thread (a uvicorn server), else do nothing."""
        if not self.settings.reload_on_sighup or threading.current_thread() is not threading.main_thread():
            return False
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload_in_background)
        except (NotImplementedError, RuntimeError, ValueError, AttributeError):
            return False
        return True

    def remove_sighup(self) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError, AttributeError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self.shared is not None:
            worker_sync.remove_worker_status(self.shared)
        services: Services | None = getattr(self.app.state, "services", None)
        if services is not None:
            services.ready = False
            await services.scorer.close()


def warm_up(classifier: ClassifierLike, max_batch_size: int) -> None:
    """Run the classifier on a few shapes so the first real requests do not pay for allocation."""
    for texts in ([WARM_UP_TEXTS[0]], WARM_UP_TEXTS, WARM_UP_TEXTS * max(1, max_batch_size // 3)):
        for _ in range(3):
            classifier.predict_proba(texts)


# ---------------------------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------------------------


def routing_input(item: ClassifyRequest, services: Services, field_prefix: str = "") -> RoutingInput:
    """The policy's view of a request; raises HTTP 422 naming the field for unusable input."""
    try:
        read = request_input(item.as_record())
    except RequestTextError as err:
        field = f"{field_prefix}{'text' if item.text is not None else 'messages'}"
        raise api_error(422, "invalid_request", f"{field}: {err}", field) from err
    request = RoutingInput(
        text=read.text, min_tier=item.min_tier, max_tier=item.max_tier, route=item.route, request=read
    )
    try:
        services.policy.validate_request(request)
    except UnknownTierError as err:
        field = f"{field_prefix}{err.field_name}"
        raise api_error(422, "unknown_tier", f"{field_prefix}{err}", field) from err
    except ValueError as err:
        raise api_error(422, "invalid_request", f"{field_prefix}{err}", f"{field_prefix}min_tier") from err
    return request


def to_response(decision: Decision, model_version: str, request_id: str) -> ClassifyResponse:
    return ClassifyResponse(
        tier=decision.tier,
        confidence=decision.confidence,
        probabilities=decision.probabilities,
        predicted_tier=decision.predicted_tier,
        escalated=decision.escalated,
        reasons=list(decision.reasons),
        decided_by=decision.decided_by,
        model=decision.model,
        fallbacks=list(decision.fallbacks),
        model_version=model_version,
        request_id=request_id,
    )


async def decide_all(services: Services, requests: list[RoutingInput]) -> tuple[list[Decision], str | None]:
    """Decisions for validated requests; never raises (fails upward instead)."""
    services.in_flight += 1
    try:
        routed = await services.router.route(requests)
        return routed.decisions, routed.classifier_error
    except Exception as err:
        logger.error("routing failed, routing upward", exc_info=err)
        return [services.policy.unavailable_decision(r) for r in requests], f"{type(err).__name__}: {err}"
    finally:
        services.in_flight -= 1


def log_decision(
    services: Services,
    context: RequestContext,
    request_id: str,
    item: ClassifyRequest,
    request: RoutingInput,
    decision: Decision,
    classifier_error: str | None,
    recorder: Any = None,
    model_version: str | None = None,
    shadow: Any = None,
) -> None:
    services.metrics.observe_decision(
        decision.tier, decision.reasons, decision.escalated, decision.decided_by
    )
    model_version = model_version or services.classifier.version
    submit_decision(
        recorder, services, request_id, item.route, request.text, decision, context.started, model_version
    )
    offer_shadow(shadow, request_id, item.route, item.as_record, decision)
    fields: dict[str, Any] = {
        "request_id": request_id,
        "trace_id": context.trace_id,
        "traceparent": context.traceparent,
        "tier": decision.tier,
        "predicted_tier": decision.predicted_tier,
        "confidence": round(decision.confidence, 4),
        "reasons": list(decision.reasons),
        "decided_by": decision.decided_by,
        "escalated": decision.escalated,
        "model": decision.model,
        "token_count": decision.token_count,
        "private_data": list(decision.private_data),
        "route": item.route,
        "metadata": item.metadata,
        "model_version": model_version,
        "latency_ms": round((time.perf_counter() - context.started) * 1000, 3),
    }
    if classifier_error:
        fields["classifier_error"] = classifier_error
    if services.settings.log_prompts:
        fields["text"] = request.text
    logger.info("classified", extra=fields)


def add_routes(app: FastAPI) -> None:
    error_responses: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorResponse} for code in (400, 401, 413, 422, 503)
    }

    @app.post(
        "/classify",
        response_model=ClassifyResponse,
        responses=error_responses,
        tags=["routing"],
        dependencies=[ApiKeyDep],
    )
    async def classify(
        item: ClassifyRequest,
        services: ServicesDep,
        context: ContextDep,
        recorder: RecorderDep,
        shadow: ShadowDep,
        tracing: TracingDep,
    ) -> ClassifyResponse:
        """The tier (and model) to call for one request."""
        request = routing_input(item, services)
        [request] = await with_private_data([request])  # a large prompt is scanned off the event loop
        decisions, versions, classifier_error = await decide_split(
            services, [request], [context.request_id], decide_all
        )
        log_decision(
            services,
            context,
            context.request_id,
            item,
            request,
            decisions[0],
            classifier_error,
            recorder,
            versions[0],
            shadow,
        )
        if tracing is not None:  # on the request's span (serving/tierwise/service/tracing.py)
            tracing.record_decision(context.request_id, decisions[0], versions[0], classifier_error)
        return to_response(decisions[0], versions[0], context.request_id)

    @app.post(
        "/classify/batch",
        response_model=BatchClassifyResponse,
        responses=error_responses,
        tags=["routing"],
        dependencies=[ApiKeyDep],
    )
    async def classify_batch(
        batch: BatchClassifyRequest,
        services: ServicesDep,
        context: ContextDep,
        recorder: RecorderDep,
        shadow: ShadowDep,
        tracing: TracingDep,
    ) -> BatchClassifyResponse:
        """Decisions for many requests in one call, in order."""
        started_ns = time.time_ns()
        limit = services.settings.max_batch_items
        if len(batch.items) > limit:
            raise api_error(
                413,
                "batch_too_large",
                f"items: {len(batch.items)} items; the limit is {limit} per call "
                "(TIERWISE_MAX_BATCH_ITEMS): split the batch",
                "items",
            )
        requests = [routing_input(item, services, f"items.{i}.") for i, item in enumerate(batch.items)]
        requests = await with_private_data(requests)
        item_ids = [f"{context.request_id}-{index}" for index in range(len(requests))]
        decisions, versions, classifier_error = await decide_split(services, requests, item_ids, decide_all)
        results = []
        for item_id, item, request, decision, version in zip(
            item_ids, batch.items, requests, decisions, versions, strict=True
        ):
            log_decision(
                services,
                context,
                item_id,
                item,
                request,
                decision,
                classifier_error,
                recorder,
                version,
                shadow,
            )
            results.append(to_response(decision, version, item_id))
        if tracing is not None:  # the batch on the request's span, a child span per item
            items = list(zip(item_ids, decisions, versions, strict=True))
            tracing.record_batch(context.request_id, started_ns, items, classifier_error)
        return BatchClassifyResponse(results=results, request_id=context.request_id)

    @app.post(
        "/feedback",
        response_model=FeedbackResponse,
        responses={code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 422, 503)},
        tags=["feedback"],
        dependencies=[ApiKeyDep],
        openapi_extra=FEEDBACK_OPENAPI,
    )
    async def feedback(request: Request, services: ServicesDep, recorder: RecorderDep) -> FeedbackResponse:
        """Record the outcome of a routed request: the tier that was needed, or whether it passed."""
        try:
            raw = json.loads(await request.body() or b"null")
        except json.JSONDecodeError as err:
            message = f"body is not valid JSON: {err.msg} at character {err.pos}"
            raise api_error(400, "invalid_json", message, "body") from err
        try:
            response = await record_feedback(raw, services.policy, recorder)
        except FeedbackError as err:
            raise api_error(err.status, err.error_type, err.message, err.field) from err
        services.metrics.feedback.inc("needed_tier" if response.needed_tier else "passed")
        return response

    @app.get("/healthz", response_model=HealthResponse, tags=["operations"])
    async def healthz() -> HealthResponse:
        """The process is alive."""
        return HealthResponse(status="ok")

    @app.get(
        "/readyz",
        response_model=HealthResponse,
        responses={503: {"model": HealthResponse}},
        tags=["operations"],
    )
    async def readyz(request: Request) -> JSONResponse:
        """The model is loaded and warmed up."""
        services: Services | None = getattr(request.app.state, "services", None)
        if services is None or not services.ready:
            return JSONResponse(HealthResponse(status="not_ready").model_dump(), status_code=503)
        return JSONResponse(
            HealthResponse(status="ready", model_version=services.classifier.version).model_dump()
        )

    @app.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
    async def metrics(request: Request) -> PlainTextResponse:
        """Prometheus metrics."""
        service_metrics: ServiceMetrics = request.app.state.metrics
        return PlainTextResponse(service_metrics.exposition(), media_type=CONTENT_TYPE)

    @app.get(
        "/model",
        tags=["operations"],
        responses={code: {"model": ErrorResponse} for code in (401, 503)},
        dependencies=[ApiKeyDep],
    )
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
            "deadline_ms": services.router.deadline_ms,
            "manifest": services.classifier.manifest.raw,
            "canary": canary_info(services),
        }

    @app.post(
        "/admin/reload",
        response_model=ReloadResponse,
        responses={code: {"model": ErrorResponse} for code in (400, 401, 403, 409, 413, 422, 503)},
        tags=["admin"],
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


def create_app(
    settings: Settings | None = None,
    classifier_factory: ClassifierFactory | None = None,
    tracer_provider: Any = None,
) -> FastAPI:
    """The service. `classifier_factory(settings)` defaults to loading `settings.model_dir`;
    `tracer_provider`: the OpenTelemetry provider for TIERWISE_TRACING (default: see serving/tierwise/service/tracing.py)."""
    settings = settings or get_settings()
    factory = classifier_factory or load_tier_classifier
    metrics = ServiceMetrics()
    tracing = open_tracing(settings, tracer_provider)  # FastAPI needs the provider when it is built

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started = time.perf_counter()
        mark_dead_workers()
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
            app.state.decision_recorder = await asyncio.to_thread(
                open_recorder, settings, metrics.observe_decision_log
            )
            app.state.shadow = await asyncio.to_thread(
                start_shadow, settings.policy_file, services.policy, app.state.decision_recorder, metrics
            )
        except Exception as err:
            logger.error("cannot start: %s", err, extra={"decision_db": settings.decision_db})
            await reloader.close()
            raise
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
            await reloader.close()
            await asyncio.to_thread(close_shadow, getattr(app.state, "shadow", None))
            await asyncio.to_thread(close_recorder, app.state.decision_recorder)
            if app.state.tracing is not None:
                await asyncio.to_thread(app.state.tracing.close)
            mark_this_worker_dead()

    app = FastAPI(
        title="tierwise",
        summary="Route each LLM request to the cheapest model tier that can handle it.",
        version="0.1.0",
        lifespan=lifespan,
        telemetry=fastapi_telemetry(tracing),
    )
    app.state.metrics = metrics
    app.state.tracing = tracing
    app.state.settings = settings
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
    add_routes(app)
    endpoints = {
        "/classify",
        "/classify/batch",
        "/healthz",
        "/readyz",
        "/metrics",
        "/model",
        "/docs",
        "/admin/reload",
        "/feedback",
    }
    app.add_middleware(
        RequestContextMiddleware, max_body_bytes=settings.max_body_bytes, metrics=metrics, endpoints=endpoints
    )
    return app


def check_model_loads(settings: Settings) -> None:
    """Load the policy and model once in the main process, or exit 3 with the `cannot start` message.

    With several workers, a worker that fails start-up does not always stop uvicorn's main process
    promptly; checking first makes a bad model folder fail fast, as with one process.
    """
    try:
        services = build_services(settings, load_tier_classifier, ServiceMetrics())
    except Exception as err:
        logger.error(
            "cannot start: %s",
            startup_error_message(err, settings),
            extra={"model_dir": str(settings.model_dir), "policy_file": str(settings.policy_file)},
        )
        raise SystemExit(3) from err
    del services


def serve(settings: Settings | None = None) -> None:
    """Run uvicorn with the settings (`python -m tierwise.service`)."""
    import uvicorn

    from tierwise.service.logs import configure_logging, uvicorn_log_config

    settings = settings or get_settings()
    configure_logging(settings.log_level)
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": uvicorn_log_config(settings.log_level),
        "access_log": False,
        "timeout_graceful_shutdown": settings.graceful_shutdown_seconds,
    }
    if settings.workers > 1:  # each worker builds its own app from the TIERWISE_* environment
        check_model_loads(settings)
        # The workers write their metrics to files in one folder, so that a scrape sums them all, and
        # share a reload generation and their model versions in another (serving/tierwise/service/worker_sync.py).
        metrics_dir = prepare_multiprocess_dir(settings.workers)
        shared = Path(tempfile.mkdtemp(prefix="tierwise-workers-"))
        os.environ[worker_sync.SHARED_DIR_ENV] = str(shared)
        try:
            # SIGHUP to this process replaces the workers one at a time (each new one ready first).
            uvicorn.run(
                "tierwise.service.app:create_app",
                factory=True,
                workers=settings.workers,
                timeout_worker_healthcheck=settings.worker_start_timeout_seconds,
                **common,
            )
        finally:
            remove_multiprocess_dir(metrics_dir)
            shutil.rmtree(shared, ignore_errors=True)
            os.environ.pop(worker_sync.SHARED_DIR_ENV, None)
    else:
        uvicorn.run(create_app(settings), **common)
