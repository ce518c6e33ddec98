"""The FastAPI application.

Create it from a bootstrapped runtime::

    from rebalancer.bootstrap import bootstrap
    from rebalancer.entrypoints.api import create_app

    app = create_app(bootstrap())
    # uvicorn.run(app, host=settings.api_host, port=settings.api_port)

OpenAPI is served at ``/openapi.json`` with interactive docs at ``/docs``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from rebalancer.bootstrap import Runtime
from rebalancer.config import Settings
from rebalancer.entrypoints.api.auth import Authenticator
from rebalancer.entrypoints.api.errors import install_error_handlers
from rebalancer.entrypoints.api.middleware import RequestContextMiddleware
from rebalancer.entrypoints.api.routes import (
    accounts,
    analyze,
    batch,
    blocks,
    execution,
    health,
    households,
    metrics,
    rebalancing,
    reference,
)

DESCRIPTION = """\
Portfolio rebalancing service: instruments, model portfolios and accounts with tax lots; drift
monitoring, rebalance triggers, tax-aware recommendations, approvals and orders.

**Authentication**: `X-API-Key: <key>` or `Authorization: Bearer <JWT>`. Scopes: `read` (GET and
analyze), `admin` (instruments, models, accounts), `trade` (rebalance triggers, cancels, alert
acknowledgements), `approve` (approvals). Every resource belongs to the caller's tenant; another
tenant's ids answer 404.

**Errors**: `{"error": code, "detail": "...", "fields": ["body.targets", ...], "request_id"}`
with 401/403/404/409/422/503; never a bare 500.

**Units**: weights are fractions of NAV; money is in the account currency (decimal strings);
quantities are shares.
"""

OPENAPI_TAGS = [
    {"name": "instruments", "description": "The security master (shared by tenants)."},
    {"name": "models", "description": "Versioned model portfolios (target weights)."},
    {"name": "accounts", "description": "Accounts with sleeves, tax lots and cash."},
    {"name": "monitoring", "description": "Drift, alerts and the trigger evaluation log."},
    {"name": "rebalancing", "description": "Rebalances, recommendations and approvals."},
    {"name": "orders", "description": "Orders created by approvals."},
    {"name": "analyze", "description": "Stateless what-if recommendations."},
    {"name": "health", "description": "Liveness, readiness and metrics."},
]


def create_app(runtime: Runtime, *, settings: Settings | None = None) -> FastAPI:
    """Build the HTTP API on ``runtime``.

    Parameters
    ----------
    runtime
        The process runtime (engine, publisher, optimizer). The app does not own it: closing
        the runtime is the caller's job.
    settings
        Overrides ``runtime.settings`` for authentication (API keys, JWT secret), e.g. in tests.

    Returns
    -------
    FastAPI
        The application, ready for uvicorn or :class:`fastapi.testclient.TestClient`.
    """
    import rebalancer

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # the fast path's buckets compile on a background thread (requests of a bucket not
        # compiled yet are answered by Clarabel meanwhile); then the GC freezes long-lived
        # objects (docs/optimizer.md, "The service's chain and warm-up")
        runtime.start_warmup()
        yield

    s = settings or runtime.settings
    app = FastAPI(
        title="rebalancer",
        version=getattr(rebalancer, "__version__", "0"),
        description=DESCRIPTION,
        openapi_tags=OPENAPI_TAGS,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.authenticator = Authenticator(s, runtime.engine)
    install_error_handlers(app)
    for module in (
        reference,
        accounts,
        rebalancing,
        batch,
        execution,
        blocks,
        analyze,
        health,
        metrics,
    ):
        app.include_router(module.router)
    app.include_router(households.router)
    app.add_middleware(RequestContextMiddleware)
    return app
