"""Unit of work: one database transaction, its repositories and its outbox.

A handler does all of its work through ``uow``: it loads aggregates, calls the domain, saves, adds
events with :meth:`UnitOfWork.publish` and calls :meth:`UnitOfWork.commit` once. Events are rows
in the ``outbox`` table of the same transaction, so a state change and its events are committed
together or not at all. Leaving the ``with`` block without commit rolls everything back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Self, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, OperationalError

from rebalancer.adapters.repositories import (
    AccountRepository,
    AuditLog,
    IdempotencyStore,
    InstrumentRepository,
    MarketDataRepository,
    ModelRepository,
    OutboxRepository,
    ProcessedEvents,
    TenantRepository,
)
from rebalancer.adapters.repositories.rebalancing import RebalancingRepository
from rebalancer.adapters.repositories.tax import TaxHistory
from rebalancer.contracts import Envelope


class UnitOfWork:
    """A transaction scoped to one tenant.

    Parameters
    ----------
    engine
        Database engine.
    tenant_id
        Every tenant-owned repository filters on it.
    """

    def __init__(self, engine: sa.Engine, tenant_id: str) -> None:
        self.engine = engine
        self.tenant_id = tenant_id
        self._conn: sa.Connection | None = None
        self._tx: sa.RootTransaction | None = None
        self._pending: list[Envelope] = []
        """Events published in this transaction, written to the outbox at commit."""

    def __enter__(self) -> Self:
        self._conn = self.engine.connect()
        self._tx = self._conn.begin()
        self._bind()
        return self

    def scoped(self, tenant_id: str) -> UnitOfWork:
        """A view of this same transaction scoped to another tenant (for tenant-wide fan-out,
        e.g. market data that touches every tenant's accounts). Commit through ``self``."""
        other = UnitOfWork(self.engine, tenant_id)
        other._conn, other._tx, other._pending = self._conn, self._tx, self._pending
        other._bind()
        return other

    def _bind(self) -> None:
        conn, t = self.conn, self.tenant_id
        self.tenants = TenantRepository(conn)
        self.instruments = InstrumentRepository(conn)
        self.models = ModelRepository(conn, t)
        self.accounts = AccountRepository(conn, t)
        self.market = MarketDataRepository(conn)
        self.rebalancing = RebalancingRepository(conn, t)
        self.outbox = OutboxRepository(conn)
        self.processed = ProcessedEvents(conn)
        self.idempotency = IdempotencyStore(conn, t)
        self.audit = AuditLog(conn, t)
        self.tax = TaxHistory(conn, t)

    @property
    def conn(self) -> sa.Connection:
        assert self._conn is not None, "use the unit of work in a with block"
        return self._conn

    def publish(self, *events: Envelope) -> None:
        """Queue events for the outbox of this transaction, in order. They are written when
        the transaction commits, all in one statement (an approval publishes two events per
        order it sends: one ``INSERT`` instead of one per call), and never when it does not."""
        self._pending.extend(events)

    def commit(self) -> None:
        """Write the published events to the outbox, then commit the transaction (a second
        call is a no-op)."""
        assert self._tx is not None, "use the unit of work in a with block"
        if self._tx.is_active:
            if self._pending:
                self.outbox.add_many(self._pending)
                self._pending.clear()
            self._tx.commit()

    def rollback(self) -> None:
        self._pending.clear()
        if self._tx is not None and self._tx.is_active:
            self._tx.rollback()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.rollback()
        if self._conn is not None:
            self._conn.close()
        self._conn = None


T = TypeVar("T")
TRANSIENT = (OperationalError,)


def is_transient(exc: BaseException) -> bool:
    """Serialization failures, deadlocks and lost connections are worth a retry."""
    if isinstance(exc, TRANSIENT):
        return True
    if isinstance(exc, DBAPIError):
        code = getattr(getattr(exc, "orig", None), "sqlstate", None)
        return code in {"40001", "40P01"}
    return False


def with_retries(fn: Callable[[], T], attempts: int = 4, base_delay_s: float = 0.1) -> T:
    """Run ``fn`` again with exponential backoff when it fails with a transient DB error."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts - 1 or not is_transient(exc):
                raise
            time.sleep(base_delay_s * (2**attempt))
    raise AssertionError("unreachable")
