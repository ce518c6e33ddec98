"""Fills in flight (migration 0011): a counted fill of an account's order awaits its settlement
until the confirmation is recorded, also when the confirmation came first; the unsettled
totals and counts read through the flag equal the ``NOT EXISTS`` derivation over
``settlements`` they replace; the migration fills the flag and the account from the history
and downgrades cleanly."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa
from migrationhelpers import columns, plan, seed
from tradehelpers import InProcessMarket, held_fills, make_book, make_recommendation, rows

from rebalancer.adapters import migrate, orm
from rebalancer.adapters.repositories import coordination
from rebalancer.adapters.repositories.coordination import CoordinationRepository
from rebalancer.adapters.repositories.execution import ExecutionRepository
from rebalancer.contracts import EventType, OrderPlacedV1, parse_payload_as
from rebalancer.service_layer.handlers import settling, trading
from rebalancer.service_layer.unit_of_work import UnitOfWork
from rebalancer.simulators.venue import SimulatedVenue

pytestmark = pytest.mark.integration

_OLD_UNSETTLED = sa.text(
    """
    SELECT coalesce(sum(e.fill_quantity * e.fill_price) FILTER (WHERE o.side = 'buy'), 0),
           coalesce(sum(e.fill_quantity * e.fill_price) FILTER (WHERE o.side = 'sell'), 0),
           count(*)
      FROM executions e JOIN orders o ON o.id = e.order_id
     WHERE o.account_id = :a AND e.kind IN ('fill', 'partial_fill')
       AND e.outcome IN ('applied', 'ignored_late')
       AND NOT EXISTS (SELECT 1 FROM settlements s WHERE s.report_id = e.report_id)
    """
)
"""The derivation before migration 0011: every counted fill of the account's orders tested
against ``settlements`` (purchases, proceeds, fills)."""


def _old_unsettled(engine: sa.Engine, account_id: str) -> tuple[Decimal, Decimal, int]:
    with engine.connect() as conn:
        buy, sell, n = conn.execute(_OLD_UNSETTLED, {"a": account_id}).one()
    return Decimal(buy), Decimal(sell), int(n)


def _flags(engine: sa.Engine, account_id: str) -> dict[str, tuple[str, str | None, bool]]:
    """``report_id -> (kind, account_id, awaiting_settlement)`` of the account's orders."""
    ex, o = orm.executions, orm.orders
    with engine.connect() as conn:
        got = conn.execute(
            sa.select(ex.c.report_id, ex.c.kind, ex.c.account_id, ex.c.awaiting_settlement)
            .join(o, o.c.id == ex.c.order_id)
            .where(o.c.account_id == account_id)
        ).all()
    return {r.report_id: (r.kind, r.account_id, r.awaiting_settlement) for r in got}


def _check_reads(engine: sa.Engine, tenant: str, account_id: str, rec: uuid.UUID) -> int:
    """The reads through the flag equal the old derivation; returns the fills in flight."""
    buy, sell, n = _old_unsettled(engine, account_id)
    with UnitOfWork(engine, tenant) as uow:
        assert CoordinationRepository(uow.conn, tenant).unsettled_both(account_id) == (buy, sell)
        assert ExecutionRepository(uow.conn, tenant).unsettled_fills(rec) == n
    in_flight = [f for f in _flags(engine, account_id).values() if f[2]]
    assert len(in_flight) == n
    return n


def test_fills_await_their_settlement_and_the_reads_match_the_old_derivation(
    engine: sa.Engine,
) -> None:
    book = make_book(engine, n_accounts=1, cash="100000")
    acct = book.accounts[0]
    market = held_fills(engine, book, acct, [(book.a, "sell", 40), (book.c, "buy", 100)])
    flags = _flags(engine, acct)
    fills = {k for k, (kind, _, _) in flags.items() if kind in ("fill", "partial_fill")}
    assert fills and {r.report_id for r in market.held} == fills
    # fills await, each with its account; the other reports (acknowledgements) never do
    assert all(flags[k][1:] == (acct, True) for k in fills)
    assert not any(f[2] for k, f in flags.items() if k not in fills)
    (rec,) = {o.recommendation_id for o in rows(engine, orm.orders, account_id=acct)}
    assert _check_reads(engine, book.tenant, acct, rec) == len(fills)

    first, *rest = market.held
    market.confirm(first)
    assert _flags(engine, acct)[first.report_id][2] is False
    assert _check_reads(engine, book.tenant, acct, rec) == len(fills) - 1
    for r in rest:
        market.confirm(r)
    assert _check_reads(engine, book.tenant, acct, rec) == 0
    (cash,) = rows(engine, orm.cash_balances, account_id=acct)
    assert cash.unsettled_purchases == cash.unsettled_proceeds == 0


def test_a_confirmation_before_its_fill_report_leaves_nothing_in_flight(
    engine: sa.Engine,
) -> None:
    book = make_book(engine, n_accounts=1, cash="100000")
    acct = book.accounts[0]
    rec = make_recommendation(engine, book, acct, [(book.a, "sell", 25)])
    market = InProcessMarket(engine, book, SimulatedVenue(seed=5), settle=False)
    with UnitOfWork(engine, book.tenant) as uow:
        trading.approve(uow, rec, "t")
    (placed,) = [
        parse_payload_as(e, OrderPlacedV1)
        for e in market._events()
        if e.type == EventType.ORDER_PLACED
    ]
    reports = market.venue.handle_order(placed, book.prices[placed.instrument])
    fills = [r for r in reports if r.kind.is_fill]
    assert fills
    for r in fills:  # the custodian's confirmation overtakes the venue's report
        market.confirm(r)
    market.apply(reports)
    flags = _flags(engine, acct)
    assert {k for k, f in flags.items() if f[0] in ("fill", "partial_fill")} == {
        r.report_id for r in fills
    }
    assert not any(f[2] for f in flags.values())
    assert _check_reads(engine, book.tenant, acct, rec) == 0


def test_a_settlement_recorded_twice_changes_nothing(engine: sa.Engine) -> None:
    book = make_book(engine, n_accounts=1, cash="100000")
    acct = book.accounts[0]
    market = held_fills(engine, book, acct, [(book.c, "buy", 10)])
    (fill,) = market.held
    conf = market.agent.settle(fill, fill.venue_time.date(), 1)
    for expected in (True, False):
        with UnitOfWork(engine, book.tenant) as uow:
            assert settling.apply_settlement_confirmation(uow, conf) is expected
    (rec,) = {o.recommendation_id for o in rows(engine, orm.orders, account_id=acct)}
    assert _check_reads(engine, book.tenant, acct, rec) == 0


_SEED = """
INSERT INTO tenants (id) VALUES ('t');
INSERT INTO instruments (id, asset_class, sector) VALUES ('X', 'equity', 'tech');
INSERT INTO accounts (id, tenant_id) VALUES ('acc', 't');
INSERT INTO rebalances (id, tenant_id, account_id, status, reasons)
  VALUES (:reb, 't', 'acc', 'trading', '["drift"]');
INSERT INTO recommendations (id, rebalance_id, tenant_id, account_id, decision, status,
                             request, response)
  VALUES (:rec, :reb, 't', 'acc', 'rebalance', 'approved', '{}', '{}');
INSERT INTO orders (id, recommendation_id, tenant_id, account_id, instrument, side, quantity,
                    filled_quantity, status)
  VALUES (:buy, :rec, 't', 'acc', 'X', 'buy', 40, 40, 'filled');
INSERT INTO executions (report_id, order_id, tenant_id, kind, fill_quantity, fill_price,
                        cumulative_quantity, sequence, outcome, venue_time)
  VALUES ('ack', :buy, 't', 'acknowledged', 0, NULL, 0, 1, 'applied', now()),
         ('in-flight', :buy, 't', 'partial_fill', 10, 12.5, 10, 2, 'applied', now()),
         ('late', :buy, 't', 'partial_fill', 10, 12.5, 20, 3, 'ignored_late', now()),
         ('settled', :buy, 't', 'partial_fill', 10, 12.5, 30, 4, 'applied', now()),
         ('refused', :buy, 't', 'fill', 50, 12.5, 80, 5, 'refused: overfill', now()),
         ('block', :block, 't', 'fill', 10, 12.5, 40, 1, 'applied', now());
INSERT INTO settlements (id, report_id, order_id, tenant_id, account_id, instrument, side,
                         quantity, price, trade_date, settle_date, status)
  VALUES ('s1', 'settled', :buy, 't', 'acc', 'X', 'buy', 10, 12.5, '2030-01-02',
          '2030-01-03', 'settled');
"""


def _plan(engine: sa.Engine) -> str:
    """``EXPLAIN`` of the unsettled totals of one account."""
    return plan(engine, coordination._UNSETTLED_BOTH, {"tid": "t", "b_account_id": "acc"})


def test_migration_0011_fills_the_flag_from_the_history(scratch: sa.Engine) -> None:
    migrate.upgrade(scratch, "0010")
    ids = {k: str(uuid.uuid4()) for k in ("reb", "rec", "buy", "block")}
    seed(scratch, _SEED, ids)
    migrate.upgrade(scratch, "0011")
    with scratch.connect() as conn:
        got = conn.execute(
            sa.text("SELECT report_id, account_id, awaiting_settlement FROM executions")
        ).all()
    assert {r[0]: (r[1], r[2]) for r in got} == {
        "ack": ("acc", False),
        "in-flight": ("acc", True),
        "late": ("acc", True),  # a late fill after a cancel still traded
        "settled": ("acc", False),
        "refused": ("acc", False),
        "block": (None, False),  # a block's own fill: its allocations settle
    }
    assert "ix_executions_awaiting_settlement" in _plan(scratch)
    with scratch.connect() as conn:
        totals = conn.execute(
            coordination._UNSETTLED_BOTH, {"tid": "t", "b_account_id": "acc"}
        ).one()
    assert tuple(totals) == (Decimal("250.00"), Decimal(0))  # 2 x 10 x 12.5 bought
    migrate.downgrade(scratch, "0010")
    assert not columns(scratch, "executions") & {"account_id", "awaiting_settlement"}
    migrate.upgrade(scratch, "0011")  # and up again
    assert {"account_id", "awaiting_settlement"} <= columns(scratch, "executions")
