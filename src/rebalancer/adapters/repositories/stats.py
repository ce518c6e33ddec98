"""Set-based read queries for progress tracking and summaries (demo, CLI reports)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date
from typing import Any

import sqlalchemy as sa

from rebalancer.adapters import orm


class BookStats:
    """Counts over the whole book (or a set of rebalances), for waiting and reporting."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def _scalar(self, q: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(q).scalar()

    def latest_price_date(self, instruments: Sequence[str] | None = None) -> date | None:
        """Date of the newest stored bar (of ``instruments`` when given)."""
        q = sa.select(sa.func.max(orm.prices.c.ts))
        if instruments is not None:
            q = q.where(orm.prices.c.instrument.in_(list(instruments)))
        ts = self._scalar(q)
        return ts.date() if ts is not None else None

    def outbox_backlog(self) -> int:
        return int(
            self._scalar(sa.select(sa.func.count()).where(orm.outbox.c.published_at.is_(None))) or 0
        )

    def rebalances_by_status(self, ids: Sequence[uuid.UUID] | None = None) -> dict[str, int]:
        t = orm.rebalances
        q = sa.select(t.c.status, sa.func.count()).group_by(t.c.status)
        if ids is not None:
            q = q.where(t.c.id.in_(list(ids)))
        with self.engine.connect() as conn:
            return {s: int(n) for s, n in conn.execute(q)}

    def rebalances(self, tenant_id: str, statuses: Sequence[str] | None = None) -> list[Any]:
        t = orm.rebalances
        q = sa.select(t).where(t.c.tenant_id == tenant_id).order_by(t.c.created_at)
        if statuses is not None:
            q = q.where(t.c.status.in_(list(statuses)))
        with self.engine.connect() as conn:
            return list(conn.execute(q))

    def recommendations(self, rebalance_ids: Sequence[uuid.UUID]) -> list[Any]:
        t = orm.recommendations
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(t).where(t.c.rebalance_id.in_(list(rebalance_ids)))))

    def orders(self, recommendation_ids: Sequence[uuid.UUID]) -> list[Any]:
        t = orm.orders
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(t).where(t.c.recommendation_id.in_(list(recommendation_ids)))
                )
            )

    def fills(self, order_ids: Sequence[uuid.UUID]) -> list[Any]:
        t = orm.executions
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(t).where(
                        t.c.order_id.in_(list(order_ids)), t.c.kind.in_(["fill", "partial_fill"])
                    )
                )
            )

    def settlements(self, order_ids: Sequence[uuid.UUID]) -> list[Any]:
        t = orm.settlements
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(t).where(t.c.order_id.in_(list(order_ids)))))

    def realized_gains(self, settlement_ids: Sequence[str]) -> list[Any]:
        t = orm.realized_gains
        with self.engine.connect() as conn:
            return list(
                conn.execute(sa.select(t).where(t.c.settlement_id.in_(list(settlement_ids))))
            )
