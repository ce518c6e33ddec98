"""Drift snapshots, trigger evaluations, alerts, rebalances, recommendations, orders,
executions and settlements (tenant-scoped)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from rebalancer.adapters import orm
from rebalancer.adapters.repositories.reference import dumps
from rebalancer.domain.errors import NotFound
from rebalancer.domain.orders import Order, OrderStatus, Side, TimeInForce

Row = sa.Row[Any]


class RebalancingRepository:
    """Everything that happens to an account after its state is known."""

    def __init__(self, conn: sa.Connection, tenant_id: str) -> None:
        self.conn = conn
        self.tenant_id = tenant_id

    # ------------------------------------------------------------------ drift and triggers
    def add_drift_snapshot(
        self,
        account_id: str,
        ts: datetime,
        nav: Decimal,
        total_abs: float,
        max_abs: float,
        tracking_error: float | None,
        details: Mapping[str, Any],
    ) -> None:
        stmt = insert(orm.drift_snapshots).values(
            account_id=account_id,
            ts=ts,
            tenant_id=self.tenant_id,
            nav=nav,
            total_abs_drift=total_abs,
            max_abs_drift=max_abs,
            tracking_error=tracking_error,
            details=dumps(details),
        )
        self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["account_id", "ts"],
                set_={
                    c: stmt.excluded[c]
                    for c in (
                        "nav",
                        "total_abs_drift",
                        "max_abs_drift",
                        "tracking_error",
                        "details",
                    )
                },
            )
        )

    def drift_history(self, account_id: str, limit: int = 250) -> list[Row]:
        t = orm.drift_snapshots
        rows = self.conn.execute(
            sa.select(t)
            .where(t.c.account_id == account_id, t.c.tenant_id == self.tenant_id)
            .order_by(t.c.ts.desc())
            .limit(limit)
        ).all()
        return list(reversed(rows))

    def add_trigger_evaluations(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            self.conn.execute(
                sa.insert(orm.trigger_evaluations),
                [
                    {
                        "id": uuid.uuid4(),
                        "tenant_id": self.tenant_id,
                        **r,
                        "inputs": dumps(r.get("inputs", {})),
                    }
                    for r in rows
                ],
            )

    def trigger_evaluations(self, account_id: str, limit: int = 100) -> list[Row]:
        t = orm.trigger_evaluations
        return list(
            self.conn.execute(
                sa.select(t)
                .where(t.c.account_id == account_id, t.c.tenant_id == self.tenant_id)
                .order_by(t.c.ts.desc())
                .limit(limit)
            ).all()
        )

    # ------------------------------------------------------------------ monitoring (issue 5)
    def add_drift_snapshots(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Upsert many drift snapshots in one statement (keys as :meth:`add_drift_snapshot`:
        account_id, ts, nav, total_abs_drift, max_abs_drift, tracking_error, details)."""
        if not rows:
            return
        stmt = insert(orm.drift_snapshots).values(
            [{**r, "tenant_id": self.tenant_id, "details": dumps(r["details"])} for r in rows]
        )
        cols = ("nav", "total_abs_drift", "max_abs_drift", "tracking_error", "details")
        self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["account_id", "ts"], set_={c: stmt.excluded[c] for c in cols}
            )
        )

    def add_trigger_evaluation_once(self, row: Mapping[str, Any]) -> uuid.UUID | None:
        """Insert one evaluation; a *fired* one with a ``period_key`` is inserted only if no fired
        evaluation of the same (account, kind, period_key) exists (partial unique index
        ``uq_trigger_period``; a concurrent insert waits for the other transaction). Returns the
        new id, or None when another evaluation already holds the period."""
        eid = uuid.uuid4()
        t = orm.trigger_evaluations
        res = self.conn.execute(
            insert(t)
            .values(
                id=eid, tenant_id=self.tenant_id, **{**row, "inputs": dumps(row.get("inputs", {}))}
            )
            .on_conflict_do_nothing(
                index_elements=["account_id", "kind", "period_key"],
                index_where=sa.text("period_key IS NOT NULL AND fired"),
            )
            .returning(t.c.id)
        ).first()
        return eid if res is not None else None

    def set_evaluations_rebalance(
        self, evaluation_ids: Sequence[uuid.UUID], rebalance_id: uuid.UUID
    ) -> None:
        if evaluation_ids:
            t = orm.trigger_evaluations
            self.conn.execute(
                sa.update(t)
                .where(t.c.id.in_(list(evaluation_ids)))
                .values(rebalance_id=rebalance_id)
            )

    def fired_evaluation(self, account_id: str, kind: str, period_key: str) -> Row | None:
        """The fired evaluation holding ``(account, kind, period_key)``, if any."""
        t = orm.trigger_evaluations
        return self.conn.execute(
            sa.select(t).where(
                t.c.account_id == account_id,
                t.c.tenant_id == self.tenant_id,
                t.c.kind == kind,
                t.c.period_key == period_key,
                t.c.fired,
            )
        ).first()

    def fired_periods(
        self,
        account_ids: Sequence[str],
        kind: str,
        period_keys: Sequence[str],
        *,
        fired_only: bool = True,
    ) -> set[tuple[str, str]]:
        """``(account_id, period_key)`` pairs among the given ones that already fired (with
        ``fired_only=False``: that have any evaluation, fired or not)."""
        if not account_ids or not period_keys:
            return set()
        t = orm.trigger_evaluations
        rows = self.conn.execute(
            sa.select(t.c.account_id, t.c.period_key).where(
                t.c.tenant_id == self.tenant_id,
                t.c.account_id.in_(list(account_ids)),
                t.c.kind == kind,
                t.c.period_key.in_(list(period_keys)),
                t.c.fired if fired_only else sa.true(),
            )
        ).all()
        return {(r.account_id, r.period_key) for r in rows}

    def open_alerts_many(self, account_ids: Sequence[str]) -> dict[str, list[Row]]:
        """Raised alerts of many accounts (account id -> rows; accounts without are absent)."""
        t = orm.alerts
        out: dict[str, list[Row]] = {}
        if not account_ids:
            return out
        for r in self.conn.execute(
            sa.select(t).where(
                t.c.account_id.in_(list(account_ids)),
                t.c.tenant_id == self.tenant_id,
                t.c.state == "raised",
            )
        ).all():
            out.setdefault(r.account_id, []).append(r)
        return out

    def update_alert(self, alert_id: uuid.UUID, severity: str, value: float, band: float) -> None:
        """Change the severity of a raised alert (escalation or de-escalation)."""
        self.conn.execute(
            sa.update(orm.alerts)
            .where(orm.alerts.c.id == alert_id)
            .values(severity=severity, value=value, band=band)
        )

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
                t.c.status.in_(["requested", "pending_approval", "approved", "trading"]),
            )
            .order_by(t.c.created_at.desc())
            .limit(1)
        ).first()

    def last_rebalance_time(self, account_id: str) -> datetime | None:
        t = orm.rebalances
        return self.conn.execute(
            sa.select(sa.func.max(t.c.created_at)).where(
                t.c.account_id == account_id, t.c.status.notin_(["no_trade", "failed"])
            )
        ).scalar()

    def get_rebalance(self, rebalance_id: uuid.UUID, *, lock: bool = False) -> Row:
        t = orm.rebalances
        q = sa.select(t).where(t.c.id == rebalance_id, t.c.tenant_id == self.tenant_id)
        row = self.conn.execute(q.with_for_update() if lock else q).first()
        if row is None:
            raise NotFound(f"rebalance {rebalance_id} does not exist", ["rebalance_id"])
        return row

    def set_rebalance_status(self, rebalance_id: uuid.UUID, status: str) -> None:
        self.conn.execute(
            sa.update(orm.rebalances)
            .where(orm.rebalances.c.id == rebalance_id)
            .values(status=status, updated_at=sa.func.now())
        )

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

    # ------------------------------------------------------------------ orders
    def insert_orders(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert orders; the unique (recommendation, account, instrument) key makes a repeat a
        no-op. Returns how many rows were new."""
        if not rows:
            return 0
        res = self.conn.execute(
            insert(orm.orders)
            .values(
                [{**r, "tenant_id": self.tenant_id, "lots": dumps(r.get("lots", []))} for r in rows]
            )
            .on_conflict_do_nothing(constraint="uq_orders_recommendation_account_instrument")
            .returning(orm.orders.c.id)
        )
        return len(res.all())

    def orders(
        self,
        *,
        account_id: str | None = None,
        recommendation_id: uuid.UUID | None = None,
        rebalance_id: uuid.UUID | None = None,
        limit: int = 500,
    ) -> list[Row]:
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
        return list(self.conn.execute(q.order_by(t.c.created_at, t.c.id).limit(limit)).all())

    def get_order(self, order_id: uuid.UUID, *, lock: bool = False) -> Row:
        t = orm.orders
        q = sa.select(t).where(t.c.id == order_id, t.c.tenant_id == self.tenant_id)
        row = self.conn.execute(q.with_for_update() if lock else q).first()
        if row is None:
            raise NotFound(f"order {order_id} does not exist", ["order_id"])
        return row

    def update_order(self, order_id: uuid.UUID, **values: Any) -> None:
        for key in ("lots", "state"):
            if key in values:
                values[key] = dumps(values[key])
        self.conn.execute(
            sa.update(orm.orders)
            .where(orm.orders.c.id == order_id)
            .values(**values, updated_at=sa.func.now())
        )

    def add_execution(self, row: Mapping[str, Any]) -> bool:
        """Record an execution report; False when its report id was seen before."""
        res = self.conn.execute(
            insert(orm.executions)
            .values(**row, tenant_id=self.tenant_id)
            .on_conflict_do_nothing(index_elements=["report_id"])
            .returning(orm.executions.c.report_id)
        ).first()
        return res is not None

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
    def add_settlement(self, row: Mapping[str, Any]) -> bool:
        """Record a settlement; False when it (or its fill) was settled before."""
        res = self.conn.execute(
            insert(orm.settlements)
            .values(**row, tenant_id=self.tenant_id)
            .on_conflict_do_nothing()
            .returning(orm.settlements.c.id)
        ).first()
        return res is not None

    def add_realized_gains(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            self.conn.execute(sa.insert(orm.realized_gains), list(rows))

    def settlements(self, account_id: str) -> list[Row]:
        t = orm.settlements
        return list(
            self.conn.execute(
                sa.select(t)
                .where(t.c.account_id == account_id, t.c.tenant_id == self.tenant_id)
                .order_by(t.c.settle_date, t.c.id)
            ).all()
        )

    # ------------------------------------------------------------------ alerts
    def open_alerts(self, account_id: str) -> list[Row]:
        t = orm.alerts
        return list(
            self.conn.execute(
                sa.select(t).where(
                    t.c.account_id == account_id,
                    t.c.tenant_id == self.tenant_id,
                    t.c.state == "raised",
                )
            ).all()
        )

    def alerts(self, account_id: str, limit: int = 200) -> list[Row]:
        t = orm.alerts
        return list(
            self.conn.execute(
                sa.select(t)
                .where(t.c.account_id == account_id, t.c.tenant_id == self.tenant_id)
                .order_by(t.c.raised_at.desc())
                .limit(limit)
            ).all()
        )

    def raise_alert(self, row: Mapping[str, Any]) -> uuid.UUID:
        aid = uuid.uuid4()
        self.conn.execute(sa.insert(orm.alerts).values(id=aid, tenant_id=self.tenant_id, **row))
        return aid

    def clear_alert(self, alert_id: uuid.UUID) -> None:
        self.conn.execute(
            sa.update(orm.alerts)
            .where(orm.alerts.c.id == alert_id)
            .values(state="cleared", cleared_at=sa.func.now())
        )

    def acknowledge_alert(self, account_id: str, alert_id: uuid.UUID, actor: str) -> Row:
        t = orm.alerts
        row = self.conn.execute(
            sa.update(t)
            .where(
                t.c.id == alert_id, t.c.account_id == account_id, t.c.tenant_id == self.tenant_id
            )
            .values(acknowledged_at=sa.func.now(), acknowledged_by=actor)
            .returning(t)
        ).first()
        if row is None:
            raise NotFound(
                f"alert {alert_id} does not exist for account {account_id}", ["alert_id"]
            )
        return row


# ---------------------------------------------------------------------- order <-> row mapping
def order_from_row(row: Row) -> Order:
    """Rebuild the domain :class:`Order` (with its report bookkeeping) from a stored row."""
    state = row.state or {}
    return Order(
        order_id=str(row.id),
        recommendation_id=str(row.recommendation_id),
        account_id=row.account_id,
        instrument=row.instrument,
        side=Side(row.side),
        quantity=Decimal(row.quantity),
        filled_quantity=Decimal(row.filled_quantity),
        avg_fill_price=row.avg_fill_price,
        status=OrderStatus(row.status),
        lots=tuple((str(lot["lot_id"]), Decimal(str(lot["quantity"]))) for lot in row.lots),
        limit_price=row.limit_price,
        arrival_price=row.arrival_price,
        tif=TimeInForce(row.time_in_force),
        applied_report_ids=list(state.get("applied_report_ids", [])),
        applied_sequences=[int(x) for x in state.get("applied_sequences", [])],
        filled_notional=Decimal(str(state.get("filled_notional", "0"))),
        priced_quantity=Decimal(str(state.get("priced_quantity", "0"))),
        late_filled_quantity=Decimal(str(state.get("late_filled_quantity", "0"))),
        wave=row.wave,
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
        "state": {
            "applied_report_ids": order.applied_report_ids,
            "applied_sequences": order.applied_sequences,
            "filled_notional": str(order.filled_notional),
            "priced_quantity": str(order.priced_quantity),
            "late_filled_quantity": str(order.late_filled_quantity),
        },
    }
