"""One place that turns every failure into a JSON error body.

Every error response has the shape of :class:`ErrorBody`::

    {"error": "invalid", "detail": "target weights sum to 0.9 ...", "fields": ["body.targets"],
     "request_id": "9f2c..."}

Mapping of the domain error families (:mod:`rebalancer.domain.errors`) to HTTP statuses:

=====================================================================  ======
family                                                                 status
=====================================================================  ======
``NotFound`` (``UnknownAccount``, ``UnknownInstrument``)                404
``InvalidInput``, ``WashSaleViolation``, ``InfeasibleRebalance``,       422
``ValidationFailed``, request validation (pydantic)
``Conflict``, ``IllegalTransition``                                     409
database unreachable                                                    503
anything unexpected (logged with the request id, never a bare 500)      500
=====================================================================  ======

``fields`` are dotted locations in the request: ``body.targets.AAPL``, ``query.limit``,
``header.Idempotency-Key``, or a path parameter name such as ``account_id``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from rebalancer.domain.errors import (
    Conflict,
    IllegalTransition,
    InfeasibleRebalance,
    InvalidInput,
    NotFound,
    RebalancerError,
    ValidationFailed,
    WashSaleViolation,
)

log = structlog.get_logger(__name__)

STATUS_BY_FAMILY: tuple[tuple[type[RebalancerError], int], ...] = (
    (NotFound, 404),
    (InvalidInput, 422),
    (WashSaleViolation, 422),
    (InfeasibleRebalance, 422),
    (ValidationFailed, 422),
    (Conflict, 409),
    (IllegalTransition, 409),
)
"""Domain error family -> HTTP status (first match wins; unknown families get 422)."""

_LOCATIONS = ("body", "query", "path", "header", "cookie")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}

# Constraint names (see the naming convention in adapters/orm.py) -> request field they concern.
_CONSTRAINT_FIELDS = {
    "pk_tax_lots": "lots",
    "fk_tax_lots_instrument_instruments": "lots",
    "pk_sleeves": "sleeves",
    "fk_sleeves_model_id_models": "sleeves",
    "fk_accounts_household_id_households": "household_id",
    "pk_accounts": "id",
    "pk_models": "id",
    "pk_instruments": "id",
}


class ErrorBody(BaseModel):
    """The JSON body of every 4xx/5xx response."""

    error: str = Field(description="Machine-readable error code, e.g. `not_found`, `invalid`.")
    detail: str = Field(description="What went wrong and, where possible, how to fix it.")
    fields: list[str] = Field(
        default_factory=list,
        description="Request locations concerned, e.g. `body.targets.AAPL`, `query.limit`.",
    )
    request_id: str | None = Field(
        default=None, description="Id of the request (also in the `X-Request-ID` header)."
    )


class ApiError(Exception):
    """An HTTP error raised by the API layer itself (authentication, idempotency, ...).

    Parameters
    ----------
    status_code
        HTTP status.
    code
        Machine-readable error code.
    detail
        Human explanation.
    fields
        Request locations concerned.
    headers
        Extra response headers (e.g. ``WWW-Authenticate``).
    """

    def __init__(
        self,
        status_code: int,
        code: str,
        detail: str,
        fields: Sequence[str] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.code = code
        self.detail = detail
        self.fields = list(fields)
        self.headers = headers


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or invalid credentials."},
    403: {"model": ErrorBody, "description": "The credentials lack the required scope."},
    404: {"model": ErrorBody, "description": "Unknown id (or another tenant's)."},
    409: {"model": ErrorBody, "description": "Conflicts with the current state."},
    422: {"model": ErrorBody, "description": "Invalid input; `fields` names it."},
    500: {"model": ErrorBody, "description": "Unexpected error; quote the request id."},
    503: {"model": ErrorBody, "description": "Database unavailable; retry later."},
}
"""OpenAPI ``responses`` shared by every ``/v1`` route."""


def request_id_of(request: Request) -> str | None:
    """The id the request middleware gave this request."""
    rid = request.scope.get("state", {}).get("request_id")
    return str(rid) if rid is not None else None


def error_response(
    request: Request,
    status_code: int,
    code: str,
    detail: str,
    fields: Sequence[str] = (),
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Render an :class:`ErrorBody`."""
    body = ErrorBody(
        error=code, detail=detail, fields=list(fields), request_id=request_id_of(request)
    )
    return JSONResponse(body.model_dump(), status_code=status_code, headers=headers)


def status_for(exc: RebalancerError) -> int:
    """HTTP status of a domain error family."""
    for family, status in STATUS_BY_FAMILY:
        if isinstance(exc, family):
            return status
    return 422


def locate_fields(request: Request, fields: Sequence[str]) -> list[str]:
    """Give domain error fields their request location.

    Handlers name fields relative to the request body (``targets``, ``policy.max_turnover``) or
    by path parameter (``account_id``). For requests with a body, fields that are neither a path
    parameter nor already located get the ``body.`` prefix, so that they read like pydantic's.
    """
    if request.method not in ("POST", "PUT", "PATCH"):
        return list(fields)
    path_params = set(request.path_params)
    out = []
    for f in fields:
        head = re.split(r"[.\[]", f, maxsplit=1)[0]
        out.append(f if head in path_params or head in _LOCATIONS else f"body.{f}")
    return out


def _loc(loc: Sequence[int | str]) -> str:
    return ".".join(str(p) for p in loc)


def _integrity(exc: sa_exc.IntegrityError) -> tuple[int, str, str, list[str]]:
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    diag = getattr(orig, "diag", None)
    constraint = getattr(diag, "constraint_name", None) or ""
    field = _CONSTRAINT_FIELDS.get(constraint, constraint)
    fields = [field] if field else []
    if sqlstate == "23505":
        return 409, "conflict", f"an id is already in use ({constraint}); pick another", fields
    if sqlstate == "23503":
        return 404, "not_found", f"a referenced id does not exist ({constraint})", fields
    return 422, "invalid", f"the data breaks a database rule ({constraint or sqlstate})", fields


def install_error_handlers(app: FastAPI) -> None:
    """Register the exception handlers (unexpected exceptions are handled by the middleware)."""

    async def domain_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RebalancerError)
        return error_response(
            request, status_for(exc), exc.code, exc.detail, locate_fields(request, exc.fields)
        )

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(
            request, exc.status_code, exc.code, exc.detail, exc.fields, exc.headers
        )

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        fields = list(dict.fromkeys(_loc(e.get("loc", ())) for e in errors))
        parts = [f"{_loc(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors[:5]]
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        return error_response(request, 422, "invalid", "; ".join(parts) + more, fields)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}; see /docs"
        headers = dict(exc.headers) if exc.headers else None
        return error_response(request, exc.status_code, code, detail, [], headers)

    async def integrity_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, sa_exc.IntegrityError)
        status, code, detail, fields = _integrity(exc)
        log.info("api.integrity_error", status=status, fields=fields)
        return error_response(request, status, code, detail, locate_fields(request, fields))

    async def data_error(request: Request, exc: Exception) -> JSONResponse:
        log.info("api.data_error", error=type(getattr(exc, "orig", exc)).__name__)
        return error_response(
            request, 422, "invalid", "a value is out of range or not storable (e.g. NUL bytes)"
        )

    async def db_unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("api.database_unavailable", error=type(getattr(exc, "orig", exc)).__name__)
        return error_response(
            request,
            503,
            "unavailable",
            "the database is unavailable; retry later",
            headers={"Retry-After": "1"},
        )

    app.add_exception_handler(RebalancerError, domain_error)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(sa_exc.IntegrityError, integrity_error)
    app.add_exception_handler(sa_exc.DataError, data_error)
    app.add_exception_handler(sa_exc.OperationalError, db_unavailable)
    app.add_exception_handler(sa_exc.TimeoutError, db_unavailable)
