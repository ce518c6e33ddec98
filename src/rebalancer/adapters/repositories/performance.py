"""Read queries of performance monitoring (success metrics, cost and effectiveness), tenant-scoped.

Only plain rows come out; the computation lives in :mod:`rebalancer.analytics.performance`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import distinct_on

from rebalancer.adapters import orm
from rebalancer.adapters.repositories.batch_results import full_request
from rebalancer.analytics.performance import BandCount


@dataclass(frozen=True, slots=True)
class StoredRecommendation:
    """A stored recommendation: its request and response as JSON."""

    id: str
    account_id: str
    decision: str
    created_at: datetime
    request: dict[str, Any]
    response: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StoredFill:
    """One fill of an order, with the order's side and arrival price (currency per share)."""

    account_id: str
    instrument: str
    side: str
    quantity: float
    price: float
    arrival_price: float | None
    time: datetime


class PerformanceRepository:
    """Set-based reads over drift snapshots, recommendations, orders and executions."""

    def __init__(self, conn: sa.Connection, tenant_id: str) -> None:
        self.conn = conn
        self.tenant_id = tenant_id

    def latest_drifts(self, since: datetime) -> dict[str, float]:
        """Account id -> account drift (half the sum of |w - w*|) of its newest snapshot at or
        after ``since``."""
        d = orm.drift_snapshots
        q = (
            sa.select(d.c.account_id, d.c.total_abs_drift)
            .ext(distinct_on(d.c.account_id))
            .where(d.c.tenant_id == self.tenant_id, d.c.ts >= since)
            .order_by(d.c.account_id, d.c.ts.desc())
        )
        return {r.account_id: float(r.total_abs_drift) / 2.0 for r in self.conn.execute(q)}

    def recommendations(self, since: datetime, limit: int) -> list[StoredRecommendation]:
        """The newest ``limit`` recommendations created at or after ``since``, each with the
        whole request it was solved with (a batch row's shared risk model added back)."""
        r = orm.recommendations
        q = (
            sa.select(
                r.c.id, r.c.account_id, r.c.decision, r.c.created_at, full_request(r), r.c.response
            )
            .where(r.c.tenant_id == self.tenant_id, r.c.created_at >= since)
            .order_by(r.c.created_at.desc())
            .limit(limit)
        )
        return [
            StoredRecommendation(
                str(x.id), x.account_id, x.decision, x.created_at, x.request, x.response
            )
            for x in self.conn.execute(q)
        ]

    def order_statuses(self, since: datetime) -> dict[str, int]:
        """Order status -> count, for orders created at or after ``since``."""
        o = orm.orders
        q = (
            sa.select(o.c.status, sa.func.count())
            .where(o.c.tenant_id == self.tenant_id, o.c.created_at >= since)
            .group_by(o.c.status)
        )
        return {s: int(n) for s, n in self.conn.execute(q)}

    def fills(self, since: datetime) -> list[StoredFill]:
        """Fills of this tenant's orders received at or after ``since``."""
        o, e = orm.orders, orm.executions
        q = (
            sa.select(
                o.c.account_id, o.c.instrument, o.c.side, e.c.fill_quantity, e.c.fill_price,
                o.c.arrival_price, e.c.venue_time,
            )
            .join(e, e.c.order_id == o.c.id)
            .where(
                o.c.tenant_id == self.tenant_id,
                e.c.kind.in_(["fill", "partial_fill"]),
                e.c.received_at >= since,
            )
        )  # fmt: skip
        return [
            StoredFill(
                r.account_id, r.instrument, r.side, float(r.fill_quantity), float(r.fill_price),
                float(r.arrival_price) if r.arrival_price is not None else None, r.venue_time,
            )
            for r in self.conn.execute(q)
            if r.fill_price is not None
        ]  # fmt: skip

    def band_counts(self, since: datetime, widths: Sequence[float]) -> list[BandCount]:
        """Per absolute band width (fraction of NAV): drift snapshots at or after ``since``,
        those whose ``max_abs_drift`` is at or beyond the width, the accounts reaching it, and
        the *entries* (at or beyond it after the account's previous snapshot in the window was
        below it, or the account's first snapshot), counted in one pass with ``lag``."""
        d = orm.drift_snapshots
        snaps = (
            sa.select(
                d.c.account_id,
                d.c.max_abs_drift.label("m"),
                sa.func.lag(d.c.max_abs_drift)
                .over(partition_by=d.c.account_id, order_by=d.c.ts)
                .label("p"),
            )
            .where(d.c.tenant_id == self.tenant_id, d.c.ts >= since)
            .subquery()
        )
        w = sa.values(sa.column("width", sa.Float), name="widths").data(
            [(float(x),) for x in widths]
        )
        over = snaps.c.m >= w.c.width
        entered = sa.and_(over, sa.or_(snaps.c.p.is_(None), snaps.c.p < w.c.width))
        q = (
            sa.select(
                w.c.width,
                sa.func.count().label("snapshots"),
                sa.func.count(sa.distinct(snaps.c.account_id)).label("accounts"),
                sa.func.count().filter(over).label("beyond"),
                sa.func.count(sa.distinct(snaps.c.account_id)).filter(over).label("acc_beyond"),
                sa.func.count().filter(entered).label("entries"),
            )
            .select_from(snaps.join(w, sa.true()))
            .group_by(w.c.width)
            .order_by(w.c.width)
        )
        rows = {float(r.width): r for r in self.conn.execute(q)}
        return [
            BandCount(float(x), *(int(getattr(rows[x], k)) for k in _BAND_COLS))
            if x in rows
            else BandCount(float(x), 0, 0, 0, 0, 0)
            for x in map(float, widths)
        ]


_BAND_COLS = ("snapshots", "accounts", "beyond", "acc_beyond", "entries")
