"""Tax history an account's next decision must respect (wash-sale windows)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import sqlalchemy as sa

from rebalancer.adapters import orm

_G = orm.realized_gains
_RECENT_LOSSES = (
    sa.select(_G.c.account_id, _G.c.instrument, _G.c.trade_date)
    .join(orm.accounts, orm.accounts.c.id == _G.c.account_id)
    .where(
        _G.c.account_id.in_(sa.bindparam("ids", expanding=True)),
        # the accounts by their keys as well: never a walk of the tenant's accounts
        orm.accounts.c.id.in_(sa.bindparam("ids", expanding=True)),
        orm.accounts.c.tenant_id == sa.bindparam("tid"),
        _G.c.gain < 0,
        _G.c.trade_date >= sa.bindparam("lo"),
        _G.c.trade_date <= sa.bindparam("hi"),
    )
    .distinct()
    .order_by(_G.c.account_id, _G.c.trade_date, _G.c.instrument)
)
"""Loss sales of some accounts of one tenant traded in ``[lo, hi]``: one range of the partial
index ``ix_realized_gains_recent_losses`` per account (migration 0012), whatever the history."""


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
        rows = self.conn.execute(
            _RECENT_LOSSES,
            {
                "ids": list(account_ids),
                "tid": self.tenant_id,
                "lo": as_of - timedelta(days=window_days),
                "hi": as_of,
            },
        ).all()
        out: dict[str, list[tuple[str, date]]] = {}
        for r in rows:
            out.setdefault(r.account_id, []).append((r.instrument, r.trade_date))
        return out
