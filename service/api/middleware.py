"""Pure-ASGI middleware (cheaper than BaseHTTPMiddleware): request id, body limit, access log,
the answer to a request the server's shutdown ended.

The request id is always ours (a fresh uuid4): it names the request's records, so a client
must not choose it. The id a client offers for its own correlation (`X-Client-Request-Id`, as
OpenAI names it; the client's `X-Request-Id` is read the same way for clients written before)
is kept beside it: logged, stored as `client_request_id`, sent upstream and echoed back in
`X-Client-Request-Id`. One that is not 1-128 safe characters is ignored.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.backends.correlation import traceparent_var, valid_traceparent
from service.errors import error_body
from service.logs import client_request_id_var, request_id_var
from service.metrics import Metrics
from service.shutdown import GracefulShutdown

log = logging.getLogger("conscience.access")

# Fits checks.client_request_id; nothing that could split a log line or a header.
_SAFE_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def client_request_id(headers: dict[bytes, bytes]) -> str | None:
    """The client's own id for its request, when it offered a safe one; never our request id."""
    for name in (b"x-client-request-id", b"x-request-id"):
        offered = headers.get(name, b"").decode("latin-1")
        if _SAFE_CLIENT_ID.match(offered):
            return offered
    return None


_ID_HEADERS = (b"x-request-id", b"x-client-request-id")


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a body without Content-Length grows past the limit.

    An HTTPException so that FastAPI's body parsing re-raises it instead of calling it a 400.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large_message(limit))


def _too_large_message(limit: int) -> str:
    return f"Request body too large: the limit is {limit} bytes."


_SHUTTING_DOWN = orjson.dumps(error_body(
    "The server is shutting down and ended this request before its answer was ready; retry it.",
    "api_error", code="server_shutting_down",
))


def _id_headers(request_id: str, client_id: str | None) -> list[tuple[bytes, bytes]]:
    ids = [(b"x-request-id", request_id.encode())]
    return ids if client_id is None else [*ids, (b"x-client-request-id", client_id.encode())]


async def _send_json(send: Send, status: int, body: bytes, ids: list[tuple[bytes, bytes]]) -> None:
    await send(
        {"type": "http.response.start", "status": status,
         "headers": [(b"content-type", b"application/json"), *ids]}
    )
    await send({"type": "http.response.body", "body": body})


class RequestContextMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, metrics: Metrics, shutdown: GracefulShutdown
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.shutdown = shutdown
        self._children: dict[tuple[str, int], Any] = {}
        self._too_large = orjson.dumps(
            error_body(_too_large_message(max_body_bytes), "invalid_request_error")
        )

    def _counter(self, endpoint: str, status: int) -> Any:
        """The requests counter's child for these labels, looked up once (a bounded set: the
        endpoint labels are, and so are HTTP statuses)."""
        child = self._children.get((endpoint, status))
        if child is None:
            child = self._children[(endpoint, status)] = self.metrics.requests.labels(endpoint, str(status))
        return child

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = uuid.uuid4().hex
        client_id = client_request_id(headers)
        ids = _id_headers(request_id, client_id)
        token = request_id_var.set(request_id)
        client_token = client_request_id_var.set(client_id)
        offered_trace = headers.get(b"traceparent", b"").decode("latin-1")
        trace_token = traceparent_var.set(valid_traceparent(offered_trace) if offered_trace else None)
        started = time.perf_counter()
        status_holder = [500]
        started_response = [False]
        try:
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                status_holder[0] = 413
                await _send_json(send, 413, self._too_large, ids)
                return

            received = 0

            async def limited_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_body_bytes:
                        raise BodyTooLarge(self.max_body_bytes)
                return message

            async def tagged_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status_holder[0] = message["status"]
                    started_response[0] = True
                    # Ours replace any a route set: the ids are the middleware's to say.
                    kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _ID_HEADERS]
                    message["headers"] = [*kept, *ids]
                await send(message)

            with self.shutdown.request():
                await self.app(scope, limited_receive, tagged_send)
        except asyncio.CancelledError:
            # uvicorn cancels the requests still running when the shutdown's grace is over: one
            # not yet answered gets a 503 the client can retry on another replica. This task
            # exists only to serve the request, so ending it with that answer ends it. A stream
            # already under way is cut off (uvicorn closes the connection): no clean end is sent
            # for an answer that was not finished.
            if not self.shutdown.began or started_response[0]:
                raise
            status_holder[0] = 503
            await _send_json(send, 503, _SHUTTING_DOWN, ids)
        finally:
            duration = (time.perf_counter() - started) * 1000.0
            path = scope.get("path", "")
            self._counter(_endpoint_label(path), status_holder[0]).inc()
            if log.isEnabledFor(logging.INFO):  # the access log's fields only when it is written
                log.info(
                    "request",
                    extra={"method": scope.get("method"), "path": path, "status": status_holder[0],
                           "duration_ms": round(duration, 2), "request_id": request_id,
                           "client_request_id": client_id},
                )
            request_id_var.reset(token)
            client_request_id_var.reset(client_token)
            traceparent_var.reset(trace_token)


def _endpoint_label(path: str) -> str:
    # A bounded label set: unknown paths must not blow up Prometheus cardinality.
    known = ("/v1/chat/completions", "/v1/responses", "/v1/completions", "/v1/models", "/v1/embeddings",
             "/v1/moderations", "/v1/conscience/check", "/v1/conscience/portkey", "/healthz", "/readyz", "/metrics")
    if path in known:
        return path
    return "/admin" if path.startswith("/admin") else "other"

