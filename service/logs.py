"""Structured JSON logs carrying the request id (docs/architecture.md, invariant 5: nothing secret at INFO)."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
# The id the client offered for its request (X-Client-Request-Id), when it offered a valid one:
# a correlation field only, never our request id (service/api/middleware.py).
client_request_id_var: ContextVar[str | None] = ContextVar("client_request_id", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            # Set at creation by the access log; other lines are formatted in their request's context.
            "request_id": getattr(record, "request_id", None) or request_id_var.get(),
        }
        client_request_id = getattr(record, "client_request_id", None) or client_request_id_var.get()
        if client_request_id is not None:
            entry["client_request_id"] = client_request_id
        for key in ("method", "path", "status", "duration_ms"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # The access log is ours (with request id and no query strings); silence uvicorn's, and
    # httpx's line per upstream call, which would double the log volume for nothing.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("httpx").setLevel(logging.WARNING)
