"""Monitoring records of an account: drift snapshots, trigger evaluations and alerts
(tenant-scoped); mixed into
:class:`~rebalancer.adapters.repositories.rebalancing.RebalancingRepository`."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from rebalancer.adapters import orm
from rebalancer.adapters.repositories.reference import dumps
from rebalancer.domain.errors import NotFound

Row = sa.Row[Any]


class MonitoringMixin:
    """Drift snapshots, trigger evaluations and alerts; needs ``conn`` and ``tenant_id``."""

    conn: sa.Connection
    tenant_id: str

    # ------------------------------------------------------------------ drift snapshots
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

    def drift_history(self, account_id: str, limit: int = 250) -> list[Row]:
        t = orm.drift_snapshots
        rows = self.conn.execute(
            sa.select(t)
            .where(t.c.account_id == account_id, t.c.tenant_id == self.tenant_id)
            .order_by(t.c.ts.desc())
            .limit(limit)
        ).all()
        return list(reversed(rows))

    # ------------------------------------------------------------------ trigger evaluations
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

    def update_alert(self, alert_id: uuid.UUID, severity: str, value: float, band: float) -> None:
        """Change the severity of a raised alert (escalation or de-escalation)."""
        self.conn.execute(
            sa.update(orm.alerts)
            .where(orm.alerts.c.id == alert_id)
            .values(severity=severity, value=value, band=band)
        )

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
