"""Tax history an account's next decision must respect (wash-sale windows)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import sqlalchemy as sa

from rebalancer.adapters import orm


class TaxHistory:
    """Realized losses of the recent past, read set-based per account (tenant-scoped)."""

    def __init__(self, conn: sa.Connection, tenant_id: str) -> None:
        self.conn = conn
        self.tenant_id = tenant_id

    def recent_loss_sales(
        self, account_id: str, as_of: date, window_days: int = 30
    ) -> list[tuple[str, date]]:
        """``(instrument, trade date)`` of sales at a loss within ``window_days`` before
        ``as_of``: buying the same wash-sale group back now would wash those losses."""
        return self.recent_loss_sales_many([account_id], as_of, window_days).get(account_id, [])

    def recent_loss_sales_many(
        self, account_ids: Sequence[str], as_of: date, window_days: int = 30
    ) -> dict[str, list[tuple[str, date]]]:
        """:meth:`recent_loss_sales` of many accounts in one query (account id -> its sales;
        accounts without one are absent), e.g. a batch chunk."""
        if not account_ids:
            return {}
        g, s = orm.realized_gains, orm.settlements
        rows = self.conn.execute(
            sa.select(g.c.account_id, g.c.instrument, s.c.trade_date)
            .join(s, s.c.id == g.c.settlement_id)
            .where(
                g.c.account_id.in_(list(account_ids)),
                s.c.tenant_id == self.tenant_id,
                g.c.gain < 0,
                s.c.trade_date >= as_of - timedelta(days=window_days),
                s.c.trade_date <= as_of,
            )
            .distinct()
            .order_by(g.c.account_id, s.c.trade_date, g.c.instrument)
        ).all()
        out: dict[str, list[tuple[str, date]]] = {}
        for r in rows:
            out.setdefault(r.account_id, []).append((r.instrument, r.trade_date))
        return out
