"""Builders for the trading tests, and an in-process market that plays venue and custodian.

:class:`InProcessMarket` reads the tenant's ``order_placed`` / ``order_cancel_requested``
events (and the service's allocation reports) straight from the outbox, runs them through
:class:`~rebalancer.simulators.venue.SimulatedVenue` and
:class:`~rebalancer.simulators.settlement.SettlementAgent`, and feeds the reports and
confirmations to the real handlers on the real database: the same path as the Pulsar
consumers, minus the broker, so tests are deterministic and fast.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from rebalancer.adapters import orm
from rebalancer.contracts import (
    EventType,
    ExecutionReportV1,
    OrderCancelRequestedV1,
    OrderPlacedV1,
    decode,
    parse_payload_as,
)
from rebalancer.domain.execution import BLOCK_ACCOUNT_ID
from rebalancer.domain.model import Account, Instrument, ModelPortfolio, Sleeve, TaxLot
from rebalancer.service_layer.handlers import portfolio, settling, trading
from rebalancer.service_layer.unit_of_work import UnitOfWork
from rebalancer.simulators.settlement import SettlementAgent
from rebalancer.simulators.venue import SimulatedVenue


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Book:
    """A small book: instruments A (T+1), B (T+2, bonds), C (T+1); accounts holding A and B."""

    tenant: str
    a: str
    b: str
    c: str
    prices: dict[str, Decimal]
    accounts: list[str]
    lots: dict[str, dict[str, str]] = field(default_factory=dict)
    """account -> instrument -> lot id."""

    @property
    def settlement_days(self) -> dict[str, int]:
        return {self.a: 1, self.b: 2, self.c: 1}


def make_book(
    engine: sa.Engine,
    n_accounts: int = 3,
    cash: str = "1000",
    tenant: str | None = None,
    lot_size_c: int = 1,
) -> Book:
    tenant = tenant or unique("t")
    suffix = uuid.uuid4().hex[:6].upper()
    a, b, c = f"A{suffix}", f"B{suffix}", f"C{suffix}"
    prices = {a: Decimal("100"), b: Decimal("50"), c: Decimal("20")}
    instruments = [
        Instrument(a, "equity", "tech", 1, settlement_days=1),
        Instrument(b, "fixed_income", "bonds", 1, settlement_days=2),
        Instrument(c, "equity", "health", lot_size_c, settlement_days=1),
    ]
    for inst in instruments:
        with UnitOfWork(engine, tenant) as uow:
            portfolio.upsert_instrument(uow, inst)
    with UnitOfWork(engine, tenant) as uow:
        uow.market.add_bars(
            datetime(2024, 1, 2, 21, tzinfo=UTC),
            [
                {"instrument": i, "close": p, "adv_shares": 1e6, "daily_volatility": 0.01}
                for i, p in prices.items()
            ],
        )
        uow.commit()
    model_id = unique("m")
    with UnitOfWork(engine, tenant) as uow:
        portfolio.save_model(uow, ModelPortfolio(model_id, 1, {a: 0.3, b: 0.3, c: 0.3}, 0.1))
    book = Book(tenant, a, b, c, prices, [])
    for _ in range(n_accounts):
        acct = unique("acct")
        la, lb = unique("lot"), unique("lot")
        account = Account(
            id=acct,
            tenant_id=tenant,
            cash=Decimal(cash),
            lots=[
                TaxLot(la, a, Decimal(100), Decimal(80), date(2022, 1, 3)),
                TaxLot(lb, b, Decimal(200), Decimal(55), date(2022, 1, 3)),
            ],
            sleeves=[Sleeve(unique("sl"), model_id, 1.0)],
        )
        with UnitOfWork(engine, tenant) as uow:
            portfolio.create_account(uow, account)
        book.accounts.append(acct)
        book.lots[acct] = {a: la, b: lb}
    return book


def make_recommendation(
    engine: sa.Engine,
    book: Book,
    account_id: str,
    trades: list[tuple[str, str, int]],
    cost_bps: float = 5.0,
) -> uuid.UUID:
    """A pending recommendation with ``(instrument, side, shares)`` trades (sells name the
    account's lot of the instrument)."""
    out = []
    for inst, side, qty in trades:
        lots = []
        if side == "sell":
            lots = [{"lot_id": book.lots[account_id][inst], "quantity": qty}]
        out.append(
            {"instrument": inst, "side": side, "quantity": qty, "lots": lots, "cost_bps": cost_bps}
        )
    request = {"instruments": [{"id": i, "price": str(p)} for i, p in book.prices.items()]}
    with UnitOfWork(engine, book.tenant) as uow:
        rid = uow.rebalancing.create_rebalance(account_id, "pending_approval", ["test"], 0)
        rec = uow.rebalancing.add_recommendation(
            rid, account_id, "rebalance", "pending_approval", Decimal(1), request, {"trades": out}
        )
        uow.commit()
    return rec


def approve_one(engine: sa.Engine) -> tuple[uuid.UUID, int, datetime]:
    """Approve a one-order recommendation; returns the order id, the outbox id before the
    approval and the order's sent stamp."""
    with engine.connect() as conn:
        before = int(conn.execute(sa.select(sa.func.max(orm.outbox.c.id))).scalar() or 0)
    book = make_book(engine, n_accounts=1, cash="100000")
    rec = make_recommendation(engine, book, book.accounts[0], [(book.a, "sell", 5)])
    with UnitOfWork(engine, book.tenant) as uow:
        (order,) = trading.approve(uow, rec, "t")
    oid = uuid.UUID(order["id"])
    (stored,) = rows(engine, orm.orders, id=oid)
    return oid, before, stored.sent_at


class InProcessMarket:
    """Venue and custodian driven by the tenant's outbox rows (see the module docstring)."""

    def __init__(
        self,
        engine: sa.Engine,
        book: Book,
        venue: SimulatedVenue,
        agent: SettlementAgent | None = None,
        *,
        settle: bool = True,
    ) -> None:
        self.engine = engine
        self.book = book
        self.venue = venue
        self.agent = agent or SettlementAgent()
        self.settle = settle
        self.held: list[ExecutionReportV1] = []
        """Fills whose settlement was withheld (``settle=False``)."""
        self.outcomes: list[tuple[str, str]] = []
        self.placed: list[OrderPlacedV1] = []
        with engine.connect() as conn:
            self.after = int(conn.execute(sa.select(sa.func.max(orm.outbox.c.id))).scalar() or 0)

    def _events(self) -> list[Any]:
        t = orm.outbox
        types = ["order_placed", "order_cancel_requested", "execution_report"]
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.c.id, t.c.body)
                .where(t.c.id > self.after, t.c.type.in_(types))
                .order_by(t.c.id)
            ).all()
        if rows:
            self.after = rows[-1].id
        envs = [decode(bytes(r.body)) for r in rows]
        return [e for e in envs if e.tenant_id == self.book.tenant]

    def apply(self, reports: list[ExecutionReportV1]) -> None:
        for r in reports:
            with UnitOfWork(self.engine, self.book.tenant) as uow:
                self.outcomes.append((r.report_id, str(trading.apply_execution_report(uow, r))))
            self.custodian(r)

    def custodian(self, r: ExecutionReportV1) -> None:
        if not r.kind.is_fill or r.fill_quantity <= 0 or r.account_id == BLOCK_ACCOUNT_ID:
            return
        if not self.settle:
            self.held.append(r)
            return
        self.confirm(r)

    def confirm(self, r: ExecutionReportV1) -> None:
        conf = self.agent.settle(
            r, r.venue_time.date(), self.book.settlement_days.get(r.instrument, 1)
        )
        with UnitOfWork(self.engine, self.book.tenant) as uow:
            settling.apply_settlement_confirmation(uow, conf)

    def release(self) -> None:
        """Settle the withheld fills."""
        held, self.held = self.held, []
        for r in held:
            self.confirm(r)

    def pump(self, rounds: int = 50, end_of_day: bool = True) -> None:
        """Run until nothing moves: orders to the venue, reports back, fills to settlement."""
        for _ in range(rounds):
            envs = self._events()
            if not envs:
                if not end_of_day:
                    return
                expired = self.venue.end_of_day()
                if not expired:
                    return
                self.apply(expired)
                continue
            for env in envs:
                if env.type == EventType.ORDER_PLACED:
                    order = parse_payload_as(env, OrderPlacedV1)
                    self.placed.append(order)
                    price = self.book.prices[order.instrument]
                    self.apply(self.venue.handle_order(order, price))
                elif env.type == EventType.ORDER_CANCEL_REQUESTED:
                    cancel = parse_payload_as(env, OrderCancelRequestedV1)
                    self.apply(self.venue.handle_cancel(cancel))
                else:  # the service's allocation of a block fill: the custodian settles it
                    self.custodian(parse_payload_as(env, ExecutionReportV1))
        raise AssertionError("the market did not settle down")


def held_fills(
    engine: sa.Engine, book: Book, account_id: str, trades: list[tuple[str, str, int]]
) -> InProcessMarket:
    """Recommend ``trades`` for the account, approve them and run the venue with settlement
    withheld: the fills wait in the returned market's ``held`` (settle them with
    :meth:`InProcessMarket.confirm`)."""
    rec = make_recommendation(engine, book, account_id, trades)
    market = InProcessMarket(engine, book, SimulatedVenue(seed=3), settle=False)
    with UnitOfWork(engine, book.tenant) as uow:
        trading.approve(uow, rec, "t")
    market.pump()
    return market


# ---------------------------------------------------------------------- reading back
def positions(
    engine: sa.Engine, tenant: str, account_id: str
) -> tuple[dict[str, Decimal], Decimal]:
    with UnitOfWork(engine, tenant) as uow:
        acct = uow.accounts.get(account_id)
    return acct.quantities(), acct.cash


def settled_deltas(
    engine: sa.Engine, account_id: str
) -> tuple[dict[str, Decimal], Decimal, list[Any]]:
    """Signed shares per instrument and cash of the account's settled fills."""
    t = orm.settlements
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t).where(t.c.account_id == account_id)).all()
    shares: dict[str, Decimal] = defaultdict(Decimal)
    cash = Decimal(0)
    for r in rows:
        if r.status != "settled":
            continue
        sign = 1 if r.side == "buy" else -1
        shares[r.instrument] += sign * r.quantity
        cash -= sign * r.quantity * r.price
    return dict(shares), cash, list(rows)


def rows(engine: sa.Engine, table: sa.Table, **where: Any) -> list[Any]:
    with engine.connect() as conn:
        q = sa.select(table)
        for k, v in where.items():
            col = table.c[k]
            q = q.where(col.in_(v) if isinstance(v, list | tuple | set) else col == v)
        return list(conn.execute(q).all())
