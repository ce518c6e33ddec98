"""Per-sleeve attribution of an account's pooled holdings and cash (tenant-scoped through the
account)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa

from rebalancer.adapters import orm
from rebalancer.adapters.orm_sleeves import sleeve_cash, sleeve_holdings


@dataclass(frozen=True, slots=True)
class SleeveAttribution:
    """``holdings``: sleeve id -> instrument -> shares; ``cash``: sleeve id -> currency."""

    holdings: dict[str, dict[str, float]]
    cash: dict[str, float]


def _bound_sleeve_ids() -> sa.Select[tuple[str]]:
    """The ids of the sleeves of the account ``account_id`` of tenant ``tid`` (bound)."""
    s, a = orm.sleeves, orm.accounts
    return (
        sa.select(s.c.id)
        .join(a, a.c.id == s.c.account_id)
        .where(s.c.account_id == sa.bindparam("account_id"), a.c.tenant_id == sa.bindparam("tid"))
    )


# Built once with bound parameters: a settlement of an account with sleeves reads them (building
# a statement and its cache key cost about as much client CPU as the round trip).
_HOLDINGS_OF = sa.select(sleeve_holdings).where(
    sleeve_holdings.c.sleeve_id.in_(_bound_sleeve_ids())
)
_CASH_OF = sa.select(sleeve_cash).where(sleeve_cash.c.sleeve_id.in_(_bound_sleeve_ids()))


class SleeveAttributionRepository:
    """Loads and stores the attribution of one tenant's accounts."""

    def __init__(self, conn: sa.Connection, tenant_id: str) -> None:
        self.conn = conn
        self.tenant_id = tenant_id

    def get(self, account_id: str) -> SleeveAttribution | None:
        """The stored attribution of the account, or None when nothing is stored."""
        params = {"account_id": account_id, "tid": self.tenant_id}
        rows = self.conn.execute(_HOLDINGS_OF, params).all()
        cash_rows = self.conn.execute(_CASH_OF, params).all()
        if not rows and not cash_rows:
            return None
        holdings: dict[str, dict[str, float]] = {}
        for r in rows:
            holdings.setdefault(r.sleeve_id, {})[r.instrument] = float(r.quantity)
        return SleeveAttribution(holdings, {r.sleeve_id: float(r.amount) for r in cash_rows})

    def replace(
        self,
        account_id: str,
        holdings: Mapping[str, Mapping[str, float]],
        cash: Mapping[str, float],
    ) -> None:
        """Replace the account's attribution (sleeve ids must be the account's)."""
        params = {"account_id": account_id, "tid": self.tenant_id}
        for table in (sleeve_holdings, sleeve_cash):
            self.conn.execute(
                sa.delete(table).where(table.c.sleeve_id.in_(_bound_sleeve_ids())), params
            )
        rows = [
            {"sleeve_id": sid, "instrument": inst, "quantity": Decimal(str(round(q, 6)))}
            for sid, per in holdings.items()
            for inst, q in per.items()
            if q > 0
        ]
        if rows:
            self.conn.execute(sa.insert(sleeve_holdings), rows)
        if cash:
            self.conn.execute(
                sa.insert(sleeve_cash),
                [
                    {"sleeve_id": sid, "amount": Decimal(str(round(c, 6)))}
                    for sid, c in cash.items()
                ],
            )
