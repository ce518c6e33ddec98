"""Per-request context handed to routes: the runtime and the authenticated principal."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from rebalancer.bootstrap import Runtime
from rebalancer.config import Scope
from rebalancer.entrypoints.api.auth import Principal, require
from rebalancer.service_layer.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class Context:
    """What a route needs: the process runtime and who is calling.

    Attributes
    ----------
    runtime
        Engine, publisher and optimizer of the process.
    principal
        The authenticated caller; its tenant scopes every query.
    """

    runtime: Runtime
    principal: Principal

    @property
    def actor(self) -> str:
        """Name recorded in the audit log."""
        return self.principal.subject

    def uow(self) -> UnitOfWork:
        """A unit of work scoped to the caller's tenant."""
        return UnitOfWork(self.runtime.engine, self.principal.tenant_id)


def get_runtime(request: Request) -> Runtime:
    """The runtime the app was created with."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def context(scope: Scope) -> Callable[..., Context]:
    """Dependency: authenticate, check ``scope`` and build the :class:`Context`."""
    needs = require(scope)

    def dependency(
        runtime: Annotated[Runtime, Depends(get_runtime)],
        principal: Annotated[Principal, Depends(needs)],
    ) -> Context:
        return Context(runtime, principal)

    dependency.__name__ = f"context_{scope.value}"
    return dependency


ReadCtx = Annotated[Context, Depends(context(Scope.READ))]
AdminCtx = Annotated[Context, Depends(context(Scope.ADMIN))]
TradeCtx = Annotated[Context, Depends(context(Scope.TRADE))]
ApproveCtx = Annotated[Context, Depends(context(Scope.APPROVE))]
