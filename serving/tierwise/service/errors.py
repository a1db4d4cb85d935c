"""Error bodies and the handlers that write them: every error is
`{"error": {"type", "message", "field"}, "request_id"}`.

Routes and dependencies raise `api_error(...)` (an HTTPException carrying that detail); the handlers
here turn it, FastAPI's validation errors, and anything unexpected (a JSON 503, never a bare 500)
into the body.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from tierwise.service.schemas import BatchClassifyRequest, ClassifyRequest, ErrorResponse, ReloadRequest

logger = logging.getLogger("tierwise.service")

# How many validation errors one message lists before it says "and N more".
LISTED_VALIDATION_ERRORS = 5


def api_error(status: int, error_type: str, message: str, field: str | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail={"type": error_type, "message": message, "field": field})


def error_body(
    error_type: str, message: str, field: str | None = None, request_id: str | None = None
) -> dict[str, Any]:
    return ErrorResponse.model_validate(
        {"error": {"type": error_type, "message": message, "field": field}, "request_id": request_id}
    ).model_dump()


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of a route whose errors have the error body."""
    return {code: {"model": ErrorResponse} for code in codes}


def _request_id(request: Request) -> str | None:
    context = getattr(request.state, "context", None)
    return context.request_id if context else None


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) if parts else "body"


# The body model of each route whose body FastAPI validates, to list the allowed fields.
BODY_MODELS: dict[str, type[BaseModel]] = {
    "/classify": ClassifyRequest,
    "/classify/batch": BatchClassifyRequest,
    "/admin/reload": ReloadRequest,
}


def allowed_fields(path: str, loc: tuple[Any, ...]) -> list[str]:
    """The fields of the object an unknown field was found in, from the schema itself."""
    model = BODY_MODELS.get(path)
    if model is BatchClassifyRequest and len(loc) > 3 and loc[1] == "items":
        model = ClassifyRequest  # ("body", "items", index, field): a field of one item
    return list(model.model_fields) if model is not None else []


def _describe(error: dict[str, Any], path: str = "") -> tuple[str, str]:
    loc = tuple(error.get("loc", ()))
    field = _field_name(loc)
    kind = error.get("type", "")
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        allowed = allowed_fields(path, loc)
        message = f"unknown field; allowed: {', '.join(allowed)}" if allowed else "unknown field"
    elif kind == "literal_error":
        expected = str((error.get("ctx") or {}).get("expected", "")).replace("'", "")
        message = f"{error.get('input')!r} is not allowed; allowed: {expected.replace(' or ', ', ')}"
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
    described = [_describe(e, request.url.path) for e in errors] or [("body", "invalid request")]
    listed = described[:LISTED_VALIDATION_ERRORS]
    message = "; ".join(f"{field}: {text}" for field, text in listed)
    if len(described) > len(listed):
        message += f"; and {len(described) - len(listed)} more"
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


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
