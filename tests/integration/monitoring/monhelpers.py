"""Builders of the monitoring tests: tenants, instruments, models, accounts and price ticks
through the service handlers on the session's database."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from rebalancer.adapters import orm
from rebalancer.contracts import MarketDataV1
from rebalancer.domain.model import Account, Instrument, ModelPortfolio, Sleeve, TaxLot
from rebalancer.service_layer.handlers import monitoring, portfolio
from rebalancer.service_layer.unit_of_work import UnitOfWork

QUIET = {"signals": {"volatility_regime": False, "correlation_change": False}}
"""Bands JSON fragment that switches the market-signal triggers off (fewer log rows)."""


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Book:
    """One tenant with its own instruments (ids unique to the test)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.tenant = uid("t")
        self.day = date(2024, 3, 4)  # a Monday

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.engine, self.tenant)

    def instruments(self, spec: Mapping[str, tuple[str, str]]) -> dict[str, str]:
        """``{"A": ("tech", "equity")}`` -> ``{"A": "A-1a2b3c4d"}`` (created)."""
        ids = {}
        with self.uow() as uow:
            uow.tenants.ensure(self.tenant)
            uow.commit()
        for name, (sector, asset) in spec.items():
            iid = uid(name).upper()
            with self.uow() as uow:
                portfolio.upsert_instrument(uow, Instrument(iid, asset_class=asset, sector=sector))
            ids[name] = iid
        return ids

    def model(
        self,
        targets: Mapping[str, float],
        cash: float,
        bands: Mapping[str, Any] | None = None,
        rule: Mapping[str, Any] | None = None,
    ) -> str:
        mid = uid("m")
        with self.uow() as uow:
            portfolio.save_model(
                uow, ModelPortfolio(mid, 0, dict(targets), cash), dict(bands or {}), rule
            )
        return mid

    def account(
        self, sleeves: Mapping[str, float], holdings: Mapping[str, float], cash: str
    ) -> str:
        aid = uid("acct")
        lots = [
            TaxLot(uid("lot"), inst, Decimal(str(q)), Decimal("1"), date(2023, 1, 3))
            for inst, q in holdings.items()
        ]
        sl = [Sleeve(uid("sl"), m, share) for m, share in sleeves.items()]
        with self.uow() as uow:
            portfolio.create_account(uow, Account(aid, self.tenant, Decimal(cash), lots, sl))
        return aid

    def tick(self, prices: Mapping[str, float], day: date | None = None) -> date:
        """Publish one day of closes through the market-data handler (next business day)."""
        from datetime import timedelta

        if day is None:
            day = self.day
            self.day += timedelta(days=3 if self.day.weekday() == 4 else 1)
        event = MarketDataV1(
            as_of=day, bars=[{"instrument": i, "close": p} for i, p in prices.items()]
        )
        with self.uow() as uow:
            monitoring.on_market_data(uow, event)
        return day

    def rows(self, table: sa.Table, **where: Any) -> list[Any]:
        q = sa.select(table)
        for k, v in where.items():
            q = q.where(table.c[k] == v)
        if "ts" in table.c:
            q = q.order_by(table.c.ts)
        with self.engine.connect() as conn:
            return list(conn.execute(q).all())

    def evaluations(self, account_id: str, kind: str | None = None) -> list[Any]:
        rows = self.rows(orm.trigger_evaluations, account_id=account_id)
        return [r for r in rows if kind is None or r.kind == kind]

    def alerts(self, account_id: str) -> list[Any]:
        return self.rows(orm.alerts, account_id=account_id)

    def rebalances(self, account_id: str) -> list[Any]:
        return self.rows(orm.rebalances, account_id=account_id)

    def alert_events(self, account_id: str) -> list[dict[str, Any]]:
        from rebalancer.contracts import decode

        out = []
        with self.engine.connect() as conn:
            for r in conn.execute(
                sa.select(orm.outbox)
                .where(orm.outbox.c.type == "drift_alert", orm.outbox.c.key == account_id)
                .order_by(orm.outbox.c.id)
            ):
                out.append(decode(r.body).payload)
        return out
