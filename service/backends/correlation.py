"""The headers that let the upstream's logs be matched to ours: sent on every upstream call a
request causes (the generation, every judge and repair call), from the request's context.

- `X-Request-Id`: the request's id (always ours: service/api/middleware.py), and
  `X-Client-Request-Id`: the client's own id for it, when it sent one;
- `traceparent` (W3C Trace Context): the client's, as it sent it; else one made from our request
  id (as the trace id) with a fresh span id per call.

With OpenTelemetry tracing on (service/tracing.py, issue 15) the transport's CLIENT span
replaces `traceparent` with its own context, which continues the client's trace, so this
function need not know about spans; to take the active span's context here instead, read it in
`outgoing_headers` (the one place the upstream backend asks) and leave the rest as it is.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from contextvars import ContextVar

from service.logs import client_request_id_var, request_id_var

# The client's traceparent, when it sent a well-formed one (set by the request middleware).
traceparent_var: ContextVar[str | None] = ContextVar("traceparent", default=None)

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


def valid_traceparent(value: str) -> str | None:
    value = value.strip().lower()
    return value if _TRACEPARENT.match(value) and not value.startswith("ff") else None


def trace_id_for(request_id: str) -> str:
    """Our request id as a W3C trace id: itself when it is 32 hex digits (ours are), else a hash."""
    lowered = request_id.lower()
    if _TRACE_ID.match(lowered) and lowered != "0" * 32:
        return lowered
    return hashlib.sha256(request_id.encode()).hexdigest()[:32]


def outgoing_headers() -> dict[str, str]:
    """The correlation headers for one upstream call made now; none outside a request."""
    request_id = request_id_var.get()
    if request_id == "-":
        return {}
    traceparent = traceparent_var.get() or f"00-{trace_id_for(request_id)}-{secrets.token_hex(8)}-01"
    headers = {"x-request-id": request_id, "traceparent": traceparent}
    if (client_id := client_request_id_var.get()) is not None:
        headers["x-client-request-id"] = client_id
    return headers
