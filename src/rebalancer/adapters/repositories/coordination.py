"""Coordination queries (tenant-scoped): follow-up rebalances, overdue settlements and the
unsettled cash columns of ``cash_balances``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from rebalancer.adapters import orm
from rebalancer.domain.orders import Side
from rebalancer.domain.rebalance import OPEN_STATUSES

Row = sa.Row[Any]


# Built once with bound parameters: they run for every fill and settlement (building a
# statement and its cache key cost about as much client CPU as the round trip;
# docs/execution.md "What trading a batch through costs").
def _unsettled_both_statement() -> sa.Select[Any]:
    """The account's fills in flight (partial index ``ix_executions_awaiting_settlement``,
    migration 0011), summed by their orders' side: bounded by the fills awaiting settlement,
    not by the account's order history."""
    ex, o = orm.executions, orm.orders
    value = ex.c.fill_quantity * ex.c.fill_price

    def total(side: Side) -> sa.ColumnElement[Any]:
        return sa.func.coalesce(sa.func.sum(value).filter(o.c.side == str(side)), 0)

    return (
        sa.select(total(Side.BUY).label("purchases"), total(Side.SELL).label("proceeds"))
        .join(o, o.c.id == ex.c.order_id)
        .where(
            ex.c.account_id == sa.bindparam("b_account_id"),
            ex.c.awaiting_settlement,
            ex.c.tenant_id == sa.bindparam("tid"),
        )
    )


_UNSETTLED_BOTH = _unsettled_both_statement()
_CASH = orm.cash_balances


def _refresh_unsettled_statement() -> sa.Update:
    """Set the account's unsettled columns from :data:`_UNSETTLED_BOTH` and return them: one
    round trip (``UPDATE ... FROM (SELECT ...) RETURNING``)."""
    sums = _UNSETTLED_BOTH.subquery()
    return (
        sa.update(_CASH)
        .where(_CASH.c.account_id == sa.bindparam("b_account_id"))
        .values(unsettled_purchases=sums.c.purchases, unsettled_proceeds=sums.c.proceeds)
        .returning(sums.c.purchases, sums.c.proceeds)
    )


_REFRESH_UNSETTLED = _refresh_unsettled_statement()
_CLEAR_OVERDUE = (
    sa.update(orm.alerts)
    .where(
        orm.alerts.c.tenant_id == sa.bindparam("tid"),
        orm.alerts.c.kind == "settlement_overdue",
        orm.alerts.c.key == sa.bindparam("report_id"),
        orm.alerts.c.state == "raised",
    )
    .values(state="cleared", cleared_at=sa.func.now())
)


class CoordinationRepository:
    """Follow-ups, overdue settlements and unsettled cash on one connection."""

    def __init__(self, conn: sa.Connection, tenant_id: str) -> None:
        self.conn = conn
        self.tenant_id = tenant_id

    # ------------------------------------------------------------------ follow-ups
    def follow_up_of(self, parent_id: uuid.UUID) -> Row | None:
        """The follow-up rebalance of ``parent_id`` (there is at most one), if any."""
        t = orm.rebalances
        return self.conn.execute(
            sa.select(t).where(
                t.c.tenant_id == self.tenant_id, t.c.parent_rebalance_id == parent_id
            )
        ).first()

    def insert_follow_up(
        self,
        parent: Row,
        reasons: Sequence[str],
        priority: int,
    ) -> uuid.UUID | None:
        """Insert the ``requested`` follow-up of ``parent`` (round = parent's + 1).

        Returns its id, or ``None`` when ``parent`` has a follow-up already: the unique
        constraint on ``parent_rebalance_id`` decides, whatever the callers raced.
        """
        rid = uuid.uuid4()
        stmt = (
            insert(orm.rebalances)
            .values(
                id=rid,
                tenant_id=self.tenant_id,
                account_id=parent.account_id,
                status="requested",
                reasons=list(reasons),
                priority=priority,
                parent_rebalance_id=parent.id,
                remainder_round=int(parent.remainder_round) + 1,
            )
            .on_conflict_do_nothing(index_elements=["parent_rebalance_id"])
            .returning(orm.rebalances.c.id)
        )
        row = self.conn.execute(stmt).first()
        return None if row is None else uuid.UUID(str(row.id))

    def rebalance_traded(self, rebalance_id: uuid.UUID) -> bool:
        """Whether the rebalance has orders (an approved recommendation that went to trading)."""
        o, rec = orm.orders, orm.recommendations
        q = sa.select(
            sa.exists().where(
                rec.c.rebalance_id == rebalance_id,
                o.c.recommendation_id == rec.c.id,
                o.c.tenant_id == self.tenant_id,
            )
        )
        return bool(self.conn.execute(q).scalar())

    def other_open_rebalance(self, account_id: str, rebalance_id: uuid.UUID) -> Row | None:
        """Another rebalance of the account still in flight (:data:`OPEN_STATUSES`)."""
        t = orm.rebalances
        return self.conn.execute(
            sa.select(t)
            .where(
                t.c.tenant_id == self.tenant_id,
                t.c.account_id == account_id,
                t.c.id != rebalance_id,
                t.c.status.in_(OPEN_STATUSES),
            )
            .limit(1)
        ).first()

    # ------------------------------------------------------------------ overdue settlements
    def unconfirmed_fills(self, today: date, grace_days: int, limit: int = 500) -> list[Row]:
        """Account fills that may be overdue on ``today``: no settlement outcome, no overdue
        alert yet, and traded more than ``settlement_days + grace_days`` calendar days ago (a
        business-day deadline is never earlier), oldest first, locked (``SKIP LOCKED``:
        concurrent sweepers split them).

        Each row has ``report_id``, ``venue_time``, ``fill_quantity``, ``fill_price``,
        ``order_id``, ``account_id``, ``instrument``, ``side`` and ``settlement_days``.
        """
        ex, o, ins = orm.executions, orm.orders, orm.instruments
        q: sa.Select[Any] = (
            sa.select(
                ex.c.report_id,
                ex.c.venue_time,
                ex.c.fill_quantity,
                ex.c.fill_price,
                ex.c.order_id,
                o.c.account_id,
                o.c.instrument,
                o.c.side,
                ins.c.settlement_days,
            )
            .join(o, o.c.id == ex.c.order_id)
            .join(ins, ins.c.id == o.c.instrument)
            .where(
                ex.c.tenant_id == self.tenant_id,
                ex.c.awaiting_settlement,  # counted fills without a settlement outcome
                ex.c.fill_quantity > 0,
                ex.c.overdue_alerted_at.is_(None),
                sa.cast(sa.func.timezone("UTC", ex.c.venue_time), sa.Date)
                + ins.c.settlement_days
                + grace_days
                < today,
            )
            .order_by(ex.c.venue_time, ex.c.report_id)
            .limit(limit)
            .with_for_update(of=ex, skip_locked=True)
        )
        return list(self.conn.execute(q).all())

    def mark_overdue_alerted(self, report_id: str) -> None:
        t = orm.executions
        self.conn.execute(
            sa.update(t).where(t.c.report_id == report_id).values(overdue_alerted_at=sa.func.now())
        )

    def clear_overdue_alert(self, report_id: str) -> None:
        """Clear the fill's raised ``settlement_overdue`` alert (its confirmation came)."""
        self.conn.execute(_CLEAR_OVERDUE, {"tid": self.tenant_id, "report_id": report_id})

    # ------------------------------------------------------------------ unsettled cash
    def unsettled_both(self, account_id: str) -> tuple[Decimal, Decimal]:
        """``(purchases, proceeds)``: currency of the account's buy and sell fills that have no
        settlement outcome yet, in one pass over its fills."""
        params = {"b_account_id": account_id, "tid": self.tenant_id}
        purchases, proceeds = self.conn.execute(_UNSETTLED_BOTH, params).one()
        return Decimal(purchases), Decimal(proceeds)

    def refresh_unsettled(self, account_id: str) -> tuple[Decimal, Decimal]:
        """Recompute ``unsettled_purchases`` and ``unsettled_proceeds`` of the account's cash
        row from its fills without a settlement outcome; returns ``(purchases, proceeds)``.

        Derived, not incremented: a full account replace (which rewrites ``cash_balances``)
        or a missed update heals at the next fill or settlement.
        """
        params = {"b_account_id": account_id, "tid": self.tenant_id}
        row = self.conn.execute(_REFRESH_UNSETTLED, params).first()
        if row is None:  # no cash row to keep them in: the totals alone
            return self.unsettled_both(account_id)
        return Decimal(row[0]), Decimal(row[1])

    def cash_row(self, account_id: str) -> Row | None:
        """The account's ``cash_balances`` row (settled, unsettled purchases and proceeds)."""
        t, a = orm.cash_balances, orm.accounts
        return self.conn.execute(
            sa.select(t)
            .join(a, a.c.id == t.c.account_id)
            .where(t.c.account_id == account_id, a.c.tenant_id == self.tenant_id)
        ).first()
