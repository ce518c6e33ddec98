"""Request middleware: request ids, structured access logs, Prometheus metrics and the last-resort
``internal_error`` response.

A pure ASGI middleware (no response buffering). It never logs headers, bodies or query strings:
credentials travel in headers, and the path template (``/v1/accounts/{account_id}``) is logged
instead of the concrete path.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import structlog
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("rebalancer.api")

REQUESTS = Counter(
    "rebalancer_http_requests_total",
    "HTTP requests by method, route template and status code.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "rebalancer_http_request_duration_seconds",
    "HTTP request latency (seconds) by method, route template and status code.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

UNMATCHED = "<unmatched>"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def route_template(scope: Scope) -> str:
    """The matched route's path template, or ``<unmatched>`` (bounded label cardinality)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if isinstance(path, str) else UNMATCHED


def _incoming_request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = str(value.decode("latin-1"))
            if _REQUEST_ID.match(candidate):
                return candidate
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Assigns a request id, measures, logs, and turns unexpected exceptions into JSON 500s."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        state: dict[str, Any] = {"status": 500, "started": False}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["started"] = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        t0 = time.perf_counter()
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            log.error(
                "api.unhandled_error",
                method=scope.get("method"),
                route=route_template(scope),
                error=type(exc).__name__,
                exc_info=exc,
            )
            state["status"] = 500
            if not state["started"]:
                await _send_internal_error(send, request_id)
        finally:
            elapsed = time.perf_counter() - t0
            method = str(scope.get("method", ""))
            route = route_template(scope)
            status = int(state["status"])
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route, str(status)).observe(elapsed)
            principal = scope["state"].get("principal")
            log.info(
                "http.request",
                method=method,
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000.0, 2),
                tenant=getattr(principal, "tenant_id", None),
                subject=getattr(principal, "subject", None),
            )
            structlog.contextvars.unbind_contextvars("request_id")


async def _send_internal_error(send: Send, request_id: str) -> None:
    body = json.dumps(
        {
            "error": "internal_error",
            "detail": f"unexpected error; quote request id {request_id} when reporting it",
            "fields": [],
            "request_id": request_id,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
