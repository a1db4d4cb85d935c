"""The ASGI middleware in front of every route: request id, traceparent, body limits, UTF-8, the
access log and HTTP metrics, and the last-resort JSON 503 (never a bare 500).

It is plain ASGI rather than Starlette's BaseHTTPMiddleware so that it can refuse an oversized body
while it streams in, before FastAPI reads it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tierwise.service.metrics import ServiceMetrics
from tierwise.service.state import RequestContext

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

# An oversized body is read and discarded before the 413 is sent: a client that writes its whole body
# before reading (urllib, requests, most SDKs) would otherwise get a broken pipe or a reset when the
# server closes with unread bytes, and never see the answer. Draining stops after this many times the
# limit or these seconds; the 413 then closes the connection.
DRAIN_LIMIT_FACTOR = 16
DRAIN_SECONDS = 10.0


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def request_context(scope: Scope, started: float) -> RequestContext:
    """The caller's X-Request-ID when it is usable (else a new one) and its W3C traceparent, if valid."""
    supplied_id = _header(scope, b"x-request-id")
    request_id = supplied_id if supplied_id and _REQUEST_ID_RE.match(supplied_id) else uuid.uuid4().hex
    traceparent = _header(scope, b"traceparent")
    trace_match = _TRACEPARENT_RE.match(traceparent.strip().lower()) if traceparent else None
    trace_id = trace_match.group(2) if trace_match else None
    return RequestContext(request_id, trace_id, traceparent if trace_match else None, started)


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


class _Responder:
    """Sends the app's response with the X-Request-ID header, or an error body of our own; remembers
    the status sent (0 while nothing has been)."""

    def __init__(self, send: Send, request_id: str) -> None:
        self._send = send
        self.request_id = request_id
        self.status = 0

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            message.setdefault("headers", [])
            message["headers"] = [*message["headers"], (b"x-request-id", self.request_id.encode())]
        await self._send(message)

    async def error(self, status: int, detail: dict[str, Any], close: bool = False) -> None:
        self.status = status
        body = {"error": detail, "request_id": self.request_id}
        await _send_json(self._send, status, body, self.request_id, close)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then passes on to the real one."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _encoding_problem(body: bytes) -> dict[str, Any] | None:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as err:
        return {
            "type": "invalid_encoding",
            "message": f"request body is not valid UTF-8 (bad byte at offset {err.start}); "
            "send JSON encoded as UTF-8",
            "field": "body",
        }
    return None


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
        chunks: list[bytes] = []
        size = 0
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

    async def _call_with_body(self, scope: Scope, receive: Receive, responder: _Responder) -> None:
        """Read the body within the limit and check it is UTF-8 before the app sees it."""
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_body_bytes:
            # A client waiting for `100 Continue` has not sent the body: answer at once (reading
            # would tell uvicorn to invite it). Any other is drained first (see DRAIN_SECONDS).
            waiting = (_header(scope, b"expect") or "").strip().lower() == "100-continue"
            ended = False if waiting else await self._discard_rest(receive, 0)
            await responder.error(413, self._too_large(declared.strip()), close=not ended)
            return
        body, oversize = await self._read_body(receive)
        if body is None:
            ended = await self._discard_rest(receive, self.max_body_bytes)
            await responder.error(413, self._too_large(oversize or "?"), close=not ended)
            return
        problem = _encoding_problem(body)
        if problem is not None:
            await responder.error(400, problem)
            return
        await self.app(scope, _replay(body, receive), responder.send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        context = request_context(scope, started)
        scope.setdefault("state", {})
        scope["state"]["context"] = context
        path = scope.get("path", "")
        responder = _Responder(send, context.request_id)
        try:
            if scope.get("method") in _BODY_METHODS:
                await self._call_with_body(scope, receive, responder)
            else:
                await self.app(scope, receive, responder.send)
        except Exception as err:  # last resort: a JSON 503 instead of a bare 500
            logger.error(
                "unhandled error", exc_info=err, extra={"request_id": context.request_id, "path": path}
            )
            if responder.status == 0:
                detail = {
                    "type": "internal_error",
                    "message": f"internal error ({type(err).__name__}); route this request to the top tier "
                    f"and report request id {context.request_id}",
                    "field": None,
                }
                await responder.error(503, detail)
        finally:
            self._observe(scope, path, context, responder.status, time.perf_counter() - started)

    def _observe(self, scope: Scope, path: str, context: RequestContext, status: int, seconds: float) -> None:
        """Count the request, time it, and write the access log line (INFO for errors, else DEBUG)."""
        endpoint = path if path in self.endpoints else "other"
        self.metrics.http_requests.inc(endpoint, str(status))
        self.metrics.latency.observe(seconds, endpoint)
        access_logger.log(
            logging.INFO if status >= 400 else logging.DEBUG,
            "http",
            extra={
                "request_id": context.request_id,
                "trace_id": context.trace_id,
                "method": scope.get("method"),
                "path": path,
                "status": status,
                "latency_ms": round(seconds * 1000, 3),
            },
        )
