"""Orders, executions and settlements of an account (tenant-scoped), and the mapping between
order rows and domain :class:`~rebalancer.domain.orders.Order` objects; mixed into
:class:`~rebalancer.adapters.repositories.rebalancing.RebalancingRepository`."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects.postgresql import insert

from rebalancer.adapters import orm
from rebalancer.adapters.repositories.reference import dumps
from rebalancer.domain.errors import NotFound
from rebalancer.domain.orders import Order, OrderStatus, Side, TimeInForce
from rebalancer.domain.rebalance import OrderTally

Row = sa.Row[Any]

FILL_KINDS = ("fill", "partial_fill")
COUNTED_OUTCOMES = ("applied", "ignored_late")
"""Execution outcomes whose shares traded (a late fill after a cancel still traded)."""


def _tally_statement() -> sa.Select[int, int, int, int, int, int, int]:
    """The :class:`OrderTally` of one recommendation's orders as one aggregate row (built once:
    it runs after every execution report and settlement)."""
    t = orm.orders
    working = t.c.status.not_in([str(s) for s in OrderStatus if s.terminal])

    def count(where: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        return sa.func.count().filter(where)

    return sa.select(
        sa.func.count(),
        count(working),
        count(t.c.status == str(OrderStatus.FILLED)),
        count(t.c.filled_quantity > 0),
        count((t.c.wave == 1) & (t.c.status == str(OrderStatus.NEW))),
        count((t.c.wave == 0) & working),
        count(t.c.requested_quantity > t.c.quantity),
    ).where(
        t.c.tenant_id == sa.bindparam("tid"),
        t.c.recommendation_id == sa.bindparam("recommendation_id"),
    )


_TALLY = _tally_statement()


# The statements below run for every execution report or settlement: each is built once, with
# bound parameters (building a statement and its cache key cost about as much client CPU as the
# round trip, docs/execution.md "What trading a batch through costs").
@functools.cache
def _get_order_statement(lock: bool) -> sa.Select[Any]:
    t = orm.orders
    q = sa.select(t).where(t.c.id == sa.bindparam("order_id"), t.c.tenant_id == sa.bindparam("tid"))
    return q.with_for_update() if lock else q


@functools.cache
def _update_order_statement(columns: tuple[str, ...]) -> sa.Update:
    t = orm.orders
    values: dict[str, Any] = {c: sa.bindparam(f"v_{c}", type_=t.c[c].type) for c in columns}
    return (
        sa.update(t)
        .where(t.c.id == sa.bindparam("order_id"))
        .values(**values, updated_at=sa.func.now())
    )


_HELD_BUYS = (
    sa.select(orm.orders)
    .where(
        orm.orders.c.tenant_id == sa.bindparam("tid"),
        orm.orders.c.recommendation_id == sa.bindparam("recommendation_id"),
        orm.orders.c.wave == 1,
        orm.orders.c.status == str(OrderStatus.NEW),
    )
    .order_by(orm.orders.c.created_at, orm.orders.c.id)
)
_MARK_SENT = (
    sa.update(orm.orders)
    .where(
        orm.orders.c.id == sa.any_(sa.bindparam("order_ids", type_=pg.ARRAY(pg.UUID(as_uuid=True))))
    )
    .values(
        status=sa.bindparam("b_status", type_=sa.Text),
        sent_at=sa.func.now(),
        send_attempts=orm.orders.c.send_attempts + 1,
        updated_at=sa.func.now(),
    )
)
_EX = orm.executions
_ADD_EXECUTION = (
    insert(_EX).on_conflict_do_nothing(index_elements=["report_id"]).returning(_EX.c.report_id)
)
# A counted fill of an account's order awaits its settlement unless the confirmation came
# first (a custodian may confirm before the venue's report arrives; both handlers hold the
# account's lock, so the test below and the settlement's clearing cannot interleave).
_ADD_FILL = _ADD_EXECUTION.values(
    awaiting_settlement=~sa.exists().where(
        orm.settlements.c.report_id == sa.bindparam("b_fill_report_id", type_=sa.Text)
    )
)
_SETTLEMENT_COLUMNS = (
    "id",
    "report_id",
    "order_id",
    "tenant_id",
    "account_id",
    "instrument",
    "side",
    "quantity",
    "price",
    "trade_date",
    "settle_date",
    "status",
    "reason",
)
# The settlement and the end of its fill's wait in one round trip; a settlement seen before
# inserts nothing, so it changes no fill either.
_ADD_SETTLEMENT = sa.text(
    f"""
    WITH added AS (
        INSERT INTO settlements ({", ".join(_SETTLEMENT_COLUMNS)})
        VALUES ({", ".join(":" + c for c in _SETTLEMENT_COLUMNS)})
        ON CONFLICT DO NOTHING
        RETURNING id, report_id
    ), recorded AS (
        UPDATE executions e SET awaiting_settlement = false
          FROM added WHERE e.report_id = added.report_id AND e.awaiting_settlement
    )
    SELECT added.id,
           (SELECT e.venue_time FROM executions e WHERE e.report_id = added.report_id)
               AS fill_time
      FROM added
    """
)
_S = orm.settlements
_ORDER_SETTLED = sa.select(
    orm.orders,
    sa.select(sa.func.coalesce(sa.func.sum(_S.c.quantity), 0))
    .where(_S.c.order_id == orm.orders.c.id, _S.c.status == "settled")
    .scalar_subquery()
    .label("settled_quantity"),
).where(orm.orders.c.id == sa.bindparam("order_id"), orm.orders.c.tenant_id == sa.bindparam("tid"))
"""An order with the shares its settlements settled so far (one statement)."""


class OrdersMixin:
    """Orders, executions and settlements; needs ``conn`` and ``tenant_id``."""

    conn: sa.Connection
    tenant_id: str

    # ------------------------------------------------------------------ orders
    def insert_orders(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert orders; the unique (recommendation, account, instrument) key makes a repeat a
        no-op. Returns how many rows were new."""
        if not rows:
            return 0
        # parameters as a list (executemany): SQLAlchemy sends them as multi-row INSERTs from
        # one cached statement; a .values([...]) statement was compiled anew for every count
        # of rows (about 80 ms for 45 orders)
        res = self.conn.execute(
            insert(orm.orders)
            .on_conflict_do_nothing(constraint="uq_orders_recommendation_account_instrument")
            .returning(orm.orders.c.id),
            [{**r, "tenant_id": self.tenant_id, "lots": dumps(r.get("lots", []))} for r in rows],
        )
        return len(res.all())

    def orders(
        self,
        *,
        account_id: str | None = None,
        recommendation_id: uuid.UUID | None = None,
        rebalance_id: uuid.UUID | None = None,
        limit: int | None = 500,
    ) -> list[Row]:
        """The tenant's orders, oldest first, filtered by account, recommendation or rebalance;
        at most ``limit`` (``None``: all of them, as the handlers that act on every order of a
        recommendation need: an account of 2,000 instruments has that many orders)."""
        t = orm.orders
        q = sa.select(t).where(t.c.tenant_id == self.tenant_id)
        if account_id is not None:
            q = q.where(t.c.account_id == account_id)
        if recommendation_id is not None:
            q = q.where(t.c.recommendation_id == recommendation_id)
        if rebalance_id is not None:
            q = q.where(
                t.c.recommendation_id.in_(
                    sa.select(orm.recommendations.c.id).where(
                        orm.recommendations.c.rebalance_id == rebalance_id
                    )
                )
            )
        q = q.order_by(t.c.created_at, t.c.id)
        return list(self.conn.execute(q if limit is None else q.limit(limit)).all())

    def held_buys(self, recommendation_id: uuid.UUID) -> list[Row]:
        """The recommendation's second-wave orders still ``new`` (buys held until its sales
        settle), oldest first, all of them."""
        params = {"tid": self.tenant_id, "recommendation_id": recommendation_id}
        return list(self.conn.execute(_HELD_BUYS, params).all())

    def order_tally(self, recommendation_id: uuid.UUID) -> OrderTally:
        """The :class:`OrderTally` of a recommendation's orders, counted by the database."""
        row = self.conn.execute(
            _TALLY, {"tid": self.tenant_id, "recommendation_id": recommendation_id}
        ).one()
        return OrderTally(*(int(v) for v in row))

    def get_order(self, order_id: uuid.UUID, *, lock: bool = False) -> Row:
        row = self.conn.execute(
            _get_order_statement(lock), {"order_id": order_id, "tid": self.tenant_id}
        ).first()
        if row is None:
            raise NotFound(f"order {order_id} does not exist", ["order_id"])
        return row

    def update_order(self, order_id: uuid.UUID, **values: Any) -> None:
        for key in ("lots", "state"):
            if key in values:
                values[key] = dumps(values[key])
        self.conn.execute(
            _update_order_statement(tuple(sorted(values))),
            {"order_id": order_id, **{f"v_{k}": v for k, v in values.items()}},
        )

    def mark_orders_sent(self, order_ids: Sequence[uuid.UUID], status: str) -> None:
        """Set the status of orders being sent to the venue, stamp ``sent_at = now()`` and
        count one more send attempt each (one statement for all of them)."""
        if order_ids:
            self.conn.execute(_MARK_SENT, {"order_ids": list(order_ids), "b_status": status})

    def open_order_count(self, account_id: str) -> int:
        """Orders of the account still working (new, sent, partially filled, cancel requested)."""
        t = orm.orders
        return int(
            self.conn.execute(
                sa.select(sa.func.count())
                .select_from(t)
                .where(
                    t.c.account_id == account_id,
                    t.c.tenant_id == self.tenant_id,
                    t.c.status.in_(["new", "sent", "partially_filled", "cancel_requested"]),
                )
            ).scalar_one()
        )

    # ------------------------------------------------------------------ executions
    def add_execution(self, row: Mapping[str, Any], account_id: str | None = None) -> bool:
        """Record an execution report; False when its report id was seen before.

        ``account_id`` is the account of the report's order (``None`` for a block's own
        reports and for unknown orders). A counted fill of an account's order (kind
        :data:`FILL_KINDS`, outcome :data:`COUNTED_OUTCOMES`) is recorded as awaiting its
        settlement, unless the settlement is recorded already. Call it under the account's
        lock, as the settlement handler takes it.
        """
        params = {**row, "tenant_id": self.tenant_id, "account_id": account_id}
        fill = row["kind"] in FILL_KINDS and row["outcome"] in COUNTED_OUTCOMES
        if fill and account_id is not None:
            params["b_fill_report_id"] = row["report_id"]
            return self.conn.execute(_ADD_FILL, params).first() is not None
        return self.conn.execute(_ADD_EXECUTION, params).first() is not None

    def executions(self, order_ids: Iterable[uuid.UUID]) -> list[Row]:
        t = orm.executions
        return list(
            self.conn.execute(
                sa.select(t)
                .where(t.c.order_id.in_(list(order_ids)))
                .order_by(t.c.order_id, t.c.sequence)
            ).all()
        )

    # ------------------------------------------------------------------ settlements
    def add_settlement(self, row: Mapping[str, Any]) -> tuple[bool, date | None]:
        """Record a settlement; returns whether it was new (False when it, or its fill, was
        settled before) and the venue date of its fill report (``None`` when not recorded),
        read by the same statement."""
        params = {c: row.get(c) for c in _SETTLEMENT_COLUMNS} | {"tenant_id": self.tenant_id}
        # the fill has a settlement outcome now (settled or failed): no longer in flight
        added = self.conn.execute(_ADD_SETTLEMENT, params).first()
        if added is None:
            return False, None
        return True, added.fill_time.date() if added.fill_time is not None else None

    def get_order_settled(self, order_id: uuid.UUID) -> Row:
        """:meth:`get_order` with ``settled_quantity``, the shares its settled settlements
        moved so far (shares; one statement)."""
        row = self.conn.execute(
            _ORDER_SETTLED, {"order_id": order_id, "tid": self.tenant_id}
        ).first()
        if row is None:
            raise NotFound(f"order {order_id} does not exist", ["order_id"])
        return row

    def add_realized_gains(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            self.conn.execute(sa.insert(orm.realized_gains), list(rows))


# ---------------------------------------------------------------------- order <-> row mapping
def row_order_fields(row: Row) -> dict[str, Any]:
    """:class:`Order` fields an order row and a block row share: the trade, its progress and the
    report bookkeeping kept in the ``state`` column (see :func:`report_state`)."""
    state = row.state or {}
    return {
        "instrument": row.instrument,
        "side": Side(row.side),
        "quantity": Decimal(row.quantity),
        "filled_quantity": Decimal(row.filled_quantity),
        "avg_fill_price": row.avg_fill_price,
        "status": OrderStatus(row.status),
        "limit_price": row.limit_price,
        "arrival_price": row.arrival_price,
        "tif": TimeInForce(row.time_in_force),
        "applied_report_ids": list(state.get("applied_report_ids", [])),
        "applied_sequences": [int(x) for x in state.get("applied_sequences", [])],
        "filled_notional": Decimal(str(state.get("filled_notional", "0"))),
        "priced_quantity": Decimal(str(state.get("priced_quantity", "0"))),
        "late_filled_quantity": Decimal(str(state.get("late_filled_quantity", "0"))),
    }


def report_state(order: Order) -> dict[str, Any]:
    """The ``state`` column: which reports an order (or block) applied, and its fill notional."""
    return {
        "applied_report_ids": order.applied_report_ids,
        "applied_sequences": order.applied_sequences,
        "filled_notional": str(order.filled_notional),
        "priced_quantity": str(order.priced_quantity),
        "late_filled_quantity": str(order.late_filled_quantity),
    }


def order_from_row(row: Row) -> Order:
    """Rebuild the domain :class:`Order` (with its report bookkeeping) from a stored row."""
    return Order(
        order_id=str(row.id),
        recommendation_id=str(row.recommendation_id),
        account_id=row.account_id,
        lots=tuple((str(lot["lot_id"]), Decimal(str(lot["quantity"]))) for lot in row.lots),
        wave=row.wave,
        **row_order_fields(row),
    )


def order_values(order: Order) -> dict[str, Any]:
    """Column values of a domain :class:`Order` (for insert or update)."""
    return {
        "id": uuid.UUID(order.order_id),
        "recommendation_id": uuid.UUID(order.recommendation_id),
        "account_id": order.account_id,
        "instrument": order.instrument,
        "side": str(order.side),
        "quantity": order.quantity,
        "filled_quantity": order.filled_quantity,
        "avg_fill_price": order.avg_fill_price,
        "status": str(order.status),
        "order_type": str(order.order_type),
        "limit_price": order.limit_price,
        "time_in_force": str(order.tif),
        "arrival_price": order.arrival_price,
        "lots": [{"lot_id": lot_id, "quantity": str(q)} for lot_id, q in order.lots],
        "wave": order.wave,
        "state": report_state(order),
    }
