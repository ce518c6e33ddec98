"""Drift snapshots, trigger evaluations, alerts, rebalances, recommendations, orders,
executions and settlements (tenant-scoped).

:class:`RebalancingRepository` holds rebalances and recommendations and composes the mixins
of :mod:`~rebalancer.adapters.repositories.monitoring` (drift snapshots, trigger evaluations,
alerts) and :mod:`~rebalancer.adapters.repositories.orders` (orders, executions, settlements);
``order_from_row`` and ``order_values`` are re-exported from the latter."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from rebalancer.adapters import orm
from rebalancer.adapters.repositories.monitoring import MonitoringMixin
from rebalancer.adapters.repositories.orders import OrdersMixin, order_from_row, order_values
from rebalancer.adapters.repositories.reference import dumps
from rebalancer.domain.errors import NotFound
from rebalancer.domain.rebalance import OPEN_STATUSES

__all__ = ["RebalancingRepository", "Row", "order_from_row", "order_values"]

Row = sa.Row[Any]


# Built once with bound parameters: they run for every execution report and settlement
# (building a statement and its cache key cost about as much client CPU as the round trip;
# docs/execution.md "What trading a batch through costs").
@functools.cache
def _get_rebalance_statement(lock: bool) -> sa.Select[Any]:
    t = orm.rebalances
    q = sa.select(t).where(
        t.c.id == sa.bindparam("rebalance_id"), t.c.tenant_id == sa.bindparam("tid")
    )
    return q.with_for_update() if lock else q


_SET_REBALANCE_STATUS = (
    sa.update(orm.rebalances)
    .where(orm.rebalances.c.id == sa.bindparam("rebalance_id"))
    .values(status=sa.bindparam("b_status", type_=sa.Text), updated_at=sa.func.now())
)
_RECOMMENDATION_OWNER = sa.select(
    orm.recommendations.c.account_id, orm.recommendations.c.rebalance_id
).where(
    orm.recommendations.c.id == sa.bindparam("recommendation_id"),
    orm.recommendations.c.tenant_id == sa.bindparam("tid"),
)


_REC = orm.recommendations
_LOCKED_REBALANCE_OF = (
    sa.select(orm.rebalances)
    .join(_REC, _REC.c.rebalance_id == orm.rebalances.c.id)
    .where(
        _REC.c.id == sa.bindparam("recommendation_id"),
        _REC.c.tenant_id == sa.bindparam("tid"),
        _REC.c.account_id == sa.bindparam("account_id"),
    )
    .with_for_update(of=orm.rebalances)
)


class RebalancingRepository(MonitoringMixin, OrdersMixin):
    """Everything that happens to an account after its state is known."""

    def __init__(self, conn: sa.Connection, tenant_id: str) -> None:
        self.conn = conn
        self.tenant_id = tenant_id

    # ------------------------------------------------------------------ rebalances
    def create_rebalance(
        self,
        account_id: str,
        status: str,
        reasons: Sequence[str],
        priority: int,
        rebalance_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        rid = rebalance_id or uuid.uuid4()
        self.conn.execute(
            sa.insert(orm.rebalances).values(
                id=rid,
                tenant_id=self.tenant_id,
                account_id=account_id,
                status=status,
                reasons=list(reasons),
                priority=priority,
            )
        )
        return rid

    def open_rebalance(self, account_id: str) -> Row | None:
        """The account's rebalance still in flight, if any.

        Finished ones (complete, partially_complete, failed, no_trade) are not open: a new
        trigger after a partial rebalance starts a new one from the new state.
        """
        t = orm.rebalances
        return self.conn.execute(
            sa.select(t)
            .where(
                t.c.account_id == account_id,
                t.c.tenant_id == self.tenant_id,
                t.c.status.in_(OPEN_STATUSES),
            )
            .order_by(t.c.created_at.desc())
            .limit(1)
        ).first()

    def last_rebalance_time(self, account_id: str) -> datetime | None:
        t = orm.rebalances
        return self.conn.execute(
            sa.select(sa.func.max(t.c.created_at)).where(
                t.c.account_id == account_id,
                t.c.status.notin_(["no_trade", "failed", "rejected"]),  # nothing traded
            )
        ).scalar()

    def stalled_requests(self, published_before: datetime, limit: int = 500) -> list[Row]:
        """Single-account rebalances still ``requested`` whose trigger was last published
        before ``published_before``, oldest first (row-locked, skipping rows another
        transaction holds; batch members excluded: their items are redelivered by the batch
        subscription). A trigger that joined the rebalance since does not count: it
        published nothing."""
        return list(self.conn.execute(self._stalled_query(published_before, limit)).all())

    def _stalled_query(self, published_before: datetime, limit: int) -> sa.Select[Any]:
        """The query of :meth:`stalled_requests` (its filter matches the partial index
        ``ix_rebalances_requested`` of migrations 0007 and 0009)."""
        t = orm.rebalances
        return (
            sa.select(t)
            .where(
                t.c.tenant_id == self.tenant_id,
                t.c.status == "requested",
                t.c.batch_id.is_(None),
                t.c.published_at < published_before,
            )
            .order_by(t.c.published_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )

    def mark_published(self, rebalance_id: uuid.UUID) -> None:
        """Stamp ``published_at`` (now): its ``rebalance_triggered`` event was published
        again. Nothing else changes (``updated_at`` included)."""
        t = orm.rebalances
        self.conn.execute(
            sa.update(t).where(t.c.id == rebalance_id).values(published_at=sa.func.now())
        )

    def get_rebalance(self, rebalance_id: uuid.UUID, *, lock: bool = False) -> Row:
        params = {"rebalance_id": rebalance_id, "tid": self.tenant_id}
        row = self.conn.execute(_get_rebalance_statement(lock), params).first()
        if row is None:
            raise NotFound(f"rebalance {rebalance_id} does not exist", ["rebalance_id"])
        return row

    def set_rebalance_status(self, rebalance_id: uuid.UUID, status: str) -> None:
        self.conn.execute(_SET_REBALANCE_STATUS, {"rebalance_id": rebalance_id, "b_status": status})

    def merge_rebalance_reasons(
        self, rebalance_id: uuid.UUID, reasons: Sequence[str], priority: int
    ) -> None:
        row = self.get_rebalance(rebalance_id, lock=True)
        merged = list(dict.fromkeys([*row.reasons, *reasons]))
        self.conn.execute(
            sa.update(orm.rebalances)
            .where(orm.rebalances.c.id == rebalance_id)
            .values(reasons=merged, priority=max(row.priority, priority), updated_at=sa.func.now())
        )

    # ------------------------------------------------------------------ recommendations
    def add_recommendation(
        self,
        rebalance_id: uuid.UUID,
        account_id: str,
        decision: str,
        status: str,
        net_benefit: Decimal,
        request: Mapping[str, Any],
        response: Mapping[str, Any],
        recommendation_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        rid = recommendation_id or uuid.uuid4()
        self.conn.execute(
            sa.insert(orm.recommendations).values(
                id=rid,
                rebalance_id=rebalance_id,
                tenant_id=self.tenant_id,
                account_id=account_id,
                decision=decision,
                status=status,
                net_benefit=net_benefit,
                request=dumps(request),
                response=dumps(response),
            )
        )
        return rid

    def recommendation_for(self, rebalance_id: uuid.UUID) -> Row | None:
        t = orm.recommendations
        return self.conn.execute(
            sa.select(t)
            .where(t.c.rebalance_id == rebalance_id, t.c.tenant_id == self.tenant_id)
            .order_by(t.c.created_at.desc())
            .limit(1)
        ).first()

    def get_recommendation(self, recommendation_id: uuid.UUID, *, lock: bool = False) -> Row:
        t = orm.recommendations
        q = sa.select(t).where(t.c.id == recommendation_id, t.c.tenant_id == self.tenant_id)
        row = self.conn.execute(q.with_for_update() if lock else q).first()
        if row is None:
            raise NotFound(
                f"recommendation {recommendation_id} does not exist", ["recommendation_id"]
            )
        return row

    def recommendation_owner(self, recommendation_id: uuid.UUID) -> tuple[str, uuid.UUID]:
        """The account and rebalance of a recommendation, without its request and answer
        (about 64 KB of JSON a row at 50 instruments, which every order change used to read
        and parse)."""
        params = {"recommendation_id": recommendation_id, "tid": self.tenant_id}
        row = self.conn.execute(_RECOMMENDATION_OWNER, params).first()
        if row is None:
            raise NotFound(
                f"recommendation {recommendation_id} does not exist", ["recommendation_id"]
            )
        return row.account_id, row.rebalance_id

    def locked_rebalance_of(self, recommendation_id: uuid.UUID, account_id: str) -> Row | None:
        """The rebalance of the account's recommendation, locked (one statement); ``None``
        when the recommendation is not the account's. Call it holding the account's lock:
        every handler locks the account before its rebalance."""
        params = {
            "recommendation_id": recommendation_id,
            "tid": self.tenant_id,
            "account_id": account_id,
        }
        return self.conn.execute(_LOCKED_REBALANCE_OF, params).first()

    def set_recommendation_status(
        self, recommendation_id: uuid.UUID, status: str, approved_by: str | None = None
    ) -> None:
        values: dict[str, Any] = {"status": status}
        if approved_by is not None:
            values.update(approved_by=approved_by, approved_at=sa.func.now())
        self.conn.execute(
            sa.update(orm.recommendations)
            .where(orm.recommendations.c.id == recommendation_id)
            .values(**values)
        )
