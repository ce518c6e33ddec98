"""Liveness, readiness and Prometheus metrics (no authentication, outside ``/v1``)."""

from __future__ import annotations

import socket
import time
from typing import Annotated, Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel, Field

from rebalancer.adapters.migrate import time_series_backend
from rebalancer.bootstrap import Runtime
from rebalancer.entrypoints.api.deps import get_runtime

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_S = 2.0


class Health(BaseModel):
    status: str = Field(description="ok")


class Check(BaseModel):
    ok: bool
    latency_ms: float = Field(description="Time the check took (milliseconds).")
    error: str | None = None


class Readiness(BaseModel):
    status: str = Field(description="ready or unavailable.")
    database: Check
    broker: Check
    time_series_backend: str | None = Field(
        description="timescaledb or plain (null when the database is down)."
    )


def broker_address(url: str) -> tuple[str, int]:
    """Host and port of the first broker of a ``pulsar://host:port[,host2:port]`` URL."""
    parts = urlsplit(url)
    first = urlsplit("//" + parts.netloc.split(",")[0])
    if not first.hostname:
        raise ValueError("the Pulsar URL names no host")
    default = 6651 if parts.scheme == "pulsar+ssl" else 6650
    return first.hostname, first.port or default


def _short(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:200]}"


def check_database(engine: sa.Engine) -> tuple[Check, str | None]:
    t0 = time.perf_counter()
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SET LOCAL statement_timeout = 2000"))
            conn.execute(sa.text("SELECT 1"))
        backend = time_series_backend(engine)
    except Exception as exc:
        return Check(ok=False, latency_ms=_ms(t0), error=_short(exc)), None
    return Check(ok=True, latency_ms=_ms(t0)), backend


def check_broker(url: str) -> Check:
    t0 = time.perf_counter()
    try:
        host, port = broker_address(url)
        with socket.create_connection((host, port), timeout=CHECK_TIMEOUT_S):
            pass
    except (OSError, ValueError) as exc:
        return Check(ok=False, latency_ms=_ms(t0), error=_short(exc))
    return Check(ok=True, latency_ms=_ms(t0))


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 2)


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is alive (no dependency is checked)."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Database or broker unreachable."}},
)
def readyz(runtime: Annotated[Runtime, Depends(get_runtime)]) -> Any:
    """Ready to serve: the database answers ``SELECT 1`` and the broker accepts TCP connections.

    503 with the failing check's error otherwise.
    """
    db, backend = check_database(runtime.engine)
    broker = check_broker(runtime.infra.pulsar_url)
    ready = db.ok and broker.ok
    body = Readiness(
        status="ready" if ready else "unavailable",
        database=db,
        broker=broker,
        time_series_backend=backend,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response)
def metrics() -> Response:
    """Prometheus exposition of the process's metrics (requests by route template and status,
    latency histograms, and whatever other modules register)."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
