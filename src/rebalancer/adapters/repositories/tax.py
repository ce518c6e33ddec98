"""Tax history an account's next decision must respect (wash-sale windows)."""

from __future__ import annotations

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
        g, s = orm.realized_gains, orm.settlements
        rows = self.conn.execute(
            sa.select(g.c.instrument, s.c.trade_date)
            .join(s, s.c.id == g.c.settlement_id)
            .where(
                g.c.account_id == account_id,
                s.c.tenant_id == self.tenant_id,
                g.c.gain < 0,
                s.c.trade_date >= as_of - timedelta(days=window_days),
                s.c.trade_date <= as_of,
            )
            .distinct()
            .order_by(s.c.trade_date, g.c.instrument)
        ).all()
        return [(r.instrument, r.trade_date) for r in rows]
