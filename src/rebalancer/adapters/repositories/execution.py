"""Block orders, send tracking, unsettled fills, realized cost estimates, execution-quality rows
and the status feed (tenant-scoped)."""

from __future__ import annotations

import enum
import functools
import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert

from rebalancer.adapters import orm
from rebalancer.adapters.repositories.orders import (
    COUNTED_OUTCOMES,
    FILL_KINDS,
    report_state,
    row_order_fields,
)
from rebalancer.adapters.repositories.reference import dumps
from rebalancer.domain.errors import NotFound
from rebalancer.domain.execution import BLOCK_ACCOUNT_ID
from rebalancer.domain.orders import Order, OrderStatus, Side

Row = sa.Row[Any]


class _Settled(enum.Enum):
    """Which fills :meth:`ExecutionRepository._count_fills` counts."""

    NOT_YET = "no settlement outcome yet"
    FAILED = "a failed settlement outcome"


@functools.cache
def _count_fills_statement(settled: _Settled, by_wave: bool, by_side: bool) -> sa.Select[Any]:
    """Counted fills of one recommendation's orders (bound: ``recommendation_id``, ``tid``,
    ``wave`` and ``side`` when asked for) with the settlement state ``settled``. Built once per
    variant: it runs after every report and settlement."""
    ex, o, st = orm.executions, orm.orders, orm.settlements
    orders = sa.select(o.c.id).where(
        o.c.recommendation_id == sa.bindparam("recommendation_id"),
        o.c.tenant_id == sa.bindparam("tid"),
    )
    if by_wave:
        orders = orders.where(o.c.wave == sa.bindparam("wave"))
    if by_side:
        orders = orders.where(o.c.side == sa.bindparam("side"))
    if settled is _Settled.NOT_YET:  # the flag is set on counted fills only (migration 0011)
        return sa.select(sa.func.count()).where(ex.c.order_id.in_(orders), ex.c.awaiting_settlement)
    counted = (ex.c.kind.in_(FILL_KINDS), ex.c.outcome.in_(COUNTED_OUTCOMES))
    # from the failed settlements of these orders (their order_id index) to their fills: an
    # EXISTS from each fill to a failed settlement was planned as a scan of every settlement
    # per fill while the table's statistics lagged behind a burst of settlements
    return (
        sa.select(sa.func.count())
        .select_from(st)
        .join(ex, ex.c.report_id == st.c.report_id)
        .where(st.c.order_id.in_(orders), st.c.status == "failed", *counted)
    )


_COSTS = orm.cost_estimates
_LOCK_COST_ESTIMATE = (
    sa.select(_COSTS)
    .where(
        _COSTS.c.tenant_id == sa.bindparam("tid"), _COSTS.c.instrument == sa.bindparam("instrument")
    )
    .with_for_update()
)


def _save_cost_estimate_statement() -> PgInsert:
    stmt = insert(_COSTS).values(updated_at=sa.func.now())
    kept = ("half_spread_bps", "observations", "last_observed_bps")
    return stmt.on_conflict_do_update(
        index_elements=["tenant_id", "instrument"],
        set_={**{k: stmt.excluded[k] for k in kept}, "updated_at": sa.func.now()},
    )


_SAVE_COST_ESTIMATE = _save_cost_estimate_statement()
"""Built once (every terminal order updates its instrument's estimate); the parameters name
``tenant_id``, ``instrument`` and the three kept columns."""


class ExecutionRepository:
    """Execution-side queries on one connection (the unit of work's transaction)."""

    def __init__(self, conn: sa.Connection, tenant_id: str) -> None:
        self.conn = conn
        self.tenant_id = tenant_id

    # ------------------------------------------------------------------ block orders
    def insert_block(self, row: Mapping[str, Any]) -> bool:
        """Insert a block order; False when its (deterministic) id exists already."""
        values = {
            **row,
            "tenant_id": self.tenant_id,
            "children": dumps(row.get("children", [])),
            "allocated": dumps(row.get("allocated", {})),
            "state": dumps(row.get("state", {})),
        }
        res = self.conn.execute(
            insert(orm.block_orders)
            .values(**values)
            .on_conflict_do_nothing()
            .returning(orm.block_orders.c.id)
        ).first()
        return res is not None

    def get_block(self, block_id: uuid.UUID, *, lock: bool = False) -> Row:
        t = orm.block_orders
        q = sa.select(t).where(t.c.id == block_id, t.c.tenant_id == self.tenant_id)
        row = self.conn.execute(q.with_for_update() if lock else q).first()
        if row is None:
            raise NotFound(f"block order {block_id} does not exist", ["block_id"])
        return row

    def update_block(self, block_id: uuid.UUID, **values: Any) -> None:
        for key in ("children", "allocated", "state"):
            if key in values:
                values[key] = dumps(values[key])
        self.conn.execute(
            sa.update(orm.block_orders)
            .where(orm.block_orders.c.id == block_id)
            .values(**values, updated_at=sa.func.now())
        )

    # ------------------------------------------------------------------ send tracking
    def mark_sent(self, table: sa.Table, row_id: uuid.UUID) -> None:
        """Stamp ``sent_at = now()`` and count one more send attempt."""
        self.conn.execute(
            sa.update(table)
            .where(table.c.id == row_id)
            .values(sent_at=sa.func.now(), send_attempts=table.c.send_attempts + 1)
        )

    def unacknowledged(self, table: sa.Table, sent_before: datetime) -> list[Row]:
        """Orders (or blocks) sent before ``sent_before`` that the venue never reported on.

        Children of a block are skipped (their block is the venue's order).
        """
        ex = orm.executions
        q = sa.select(table).where(
            table.c.tenant_id == self.tenant_id,
            table.c.status.in_([str(OrderStatus.SENT), str(OrderStatus.CANCEL_REQUESTED)]),
            table.c.sent_at < sent_before,
            ~sa.exists().where(ex.c.order_id == table.c.id),
        )
        if table is orm.orders:
            q = q.where(table.c.block_id.is_(None))
        return list(self.conn.execute(q.order_by(table.c.sent_at).with_for_update()).all())

    # ------------------------------------------------------------------ unsettled fills
    def _count_fills(
        self,
        recommendation_id: uuid.UUID,
        settled: _Settled,
        *,
        wave: int | None = None,
        side: Side | None = None,
    ) -> int:
        """How many counted fills of the recommendation's orders (of one ``wave`` and ``side``
        when given) lack a settlement outcome or have a failed one (``settled``)."""
        params = {"recommendation_id": recommendation_id, "tid": self.tenant_id}
        if wave is not None:
            params["wave"] = wave
        if side is not None:
            params["side"] = str(side)
        q = _count_fills_statement(settled, wave is not None, side is not None)
        return int(self.conn.execute(q, params).scalar_one())

    def unsettled_fills(
        self,
        recommendation_id: uuid.UUID,
        *,
        wave: int | None = None,
        side: Side | None = None,
    ) -> int:
        """How many fills of the recommendation's orders (of one ``wave`` and ``side`` when
        given) have no settlement outcome yet."""
        return self._count_fills(recommendation_id, _Settled.NOT_YET, wave=wave, side=side)

    def failed_settlements(self, recommendation_id: uuid.UUID) -> int:
        """How many fills of the recommendation's orders have a failed settlement outcome."""
        return self._count_fills(recommendation_id, _Settled.FAILED)

    # ------------------------------------------------------------------ cost estimates
    def cost_estimates(self, instruments: Sequence[str]) -> dict[str, Row]:
        t = orm.cost_estimates
        rows = self.conn.execute(
            sa.select(t).where(
                t.c.tenant_id == self.tenant_id, t.c.instrument.in_(list(instruments))
            )
        ).all()
        return {r.instrument: r for r in rows}

    def lock_cost_estimate(self, instrument: str) -> Row | None:
        params = {"tid": self.tenant_id, "instrument": instrument}
        return self.conn.execute(_LOCK_COST_ESTIMATE, params).first()

    def save_cost_estimate(
        self, instrument: str, half_spread_bps: float, observations: int, observed_bps: float
    ) -> None:
        self.conn.execute(
            _SAVE_COST_ESTIMATE,
            {
                "tenant_id": self.tenant_id,
                "instrument": instrument,
                "half_spread_bps": half_spread_bps,
                "observations": observations,
                "last_observed_bps": observed_bps,
            },
        )

    # ------------------------------------------------------------------ quality
    def orders_between(self, start: date, end: date) -> list[Row]:
        """Orders created on days ``start..end`` (UTC, inclusive), with their created day."""
        t = orm.orders
        day = sa.cast(sa.func.timezone("UTC", t.c.created_at), sa.Date)
        return list(
            self.conn.execute(
                sa.select(t, day.label("day")).where(
                    t.c.tenant_id == self.tenant_id, day >= start, day <= end
                )
            ).all()
        )

    def finished_rebalances_between(self, start: date, end: date) -> list[Row]:
        """``(day, status)`` of rebalances that had orders, by the UTC day they last changed."""
        r, o, rec = orm.rebalances, orm.orders, orm.recommendations
        day = sa.cast(sa.func.timezone("UTC", r.c.updated_at), sa.Date)
        traded = sa.exists().where(rec.c.rebalance_id == r.c.id, o.c.recommendation_id == rec.c.id)
        return list(
            self.conn.execute(
                sa.select(day.label("day"), r.c.status).where(
                    r.c.tenant_id == self.tenant_id, day >= start, day <= end, traded
                )
            ).all()
        )


# ---------------------------------------------------------------------- block <-> domain
def block_from_row(row: Row) -> Order:
    """The block as a domain :class:`Order` (state machine and report bookkeeping reused)."""
    return Order(
        order_id=str(row.id),
        recommendation_id=str(row.id),
        account_id=BLOCK_ACCOUNT_ID,
        block_id=str(row.id),
        **row_order_fields(row),
    )


def block_values(block: Order) -> dict[str, Any]:
    """Columns of a block that reports change."""
    return {
        "filled_quantity": block.filled_quantity,
        "avg_fill_price": block.avg_fill_price,
        "status": str(block.status),
        "state": report_state(block),
    }


# ---------------------------------------------------------------------- status feed
_FEED = sa.text(
    """
    WITH horizon AS (SELECT (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint AS xmin)
    SELECT o.txid, o.id, o.body
    FROM outbox o, horizon h
    WHERE o.type = 'status_updated'
      AND o.txid < h.xmin
      AND (o.txid, o.id) > (:txid, :id)
      AND (convert_from(o.body, 'UTF8')::jsonb ->> 'tenant_id') = :tenant
    ORDER BY o.txid, o.id
    LIMIT :limit
    """
)
_HORIZON = sa.text("SELECT (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint")
_LAST = 2**63 - 1


def status_feed(
    conn: sa.Connection, tenant_id: str, after: tuple[int, int], limit: int = 200
) -> list[Row]:
    """``status_updated`` outbox rows of the tenant after the cursor ``(txid, id)``.

    Rows come in ``(txid, id)`` order and only from transactions older than every running one
    (``txid < xmin`` of the current snapshot): no later commit can ever land before the
    cursor, so a reader that resumes from its last cursor misses nothing and sees nothing twice,
    whichever API process serves it.
    """
    return list(
        conn.execute(
            _FEED, {"txid": after[0], "id": after[1], "tenant": tenant_id, "limit": limit}
        ).all()
    )


def status_feed_head(conn: sa.Connection) -> tuple[int, int]:
    """A cursor positioned at "now": only rows committed from here on follow it."""
    xmin = int(conn.execute(_HORIZON).scalar_one())
    return (xmin - 1, _LAST)
