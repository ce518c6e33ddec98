"""Timeouts and re-sends; settlement dates by asset class; failed settlements; the
good-faith guard; re-optimizing the remainder of a partially complete rebalance."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from tradehelpers import (
    InProcessMarket,
    held_fills,
    make_book,
    make_recommendation,
    positions,
    rows,
)

from rebalancer.adapters import orm
from rebalancer.contracts import ExecutionReportV1, ReportKind
from rebalancer.domain.calendar import BusinessCalendar
from rebalancer.domain.model import Instrument
from rebalancer.domain.settlement import settlement_date
from rebalancer.service_layer.handlers import trading
from rebalancer.service_layer.handlers.closing import reoptimize_remainder
from rebalancer.service_layer.handlers.timeouts import sweep_timeouts
from rebalancer.service_layer.unit_of_work import UnitOfWork
from rebalancer.simulators.settlement import SettlementAgent
from rebalancer.simulators.venue import SimulatedVenue

pytestmark = pytest.mark.integration
HOUR = timedelta(hours=1)


def _sweep(engine: Any, tenant: str, hours_ahead: float) -> Any:
    with UnitOfWork(engine, tenant) as uow:
        return sweep_timeouts(uow, datetime.now(UTC) + hours_ahead * HOUR, HOUR, max_sends=3)


def test_unacknowledged_orders_are_resent_then_cancelled_then_expired(engine: Any) -> None:
    book = make_book(engine, n_accounts=3, cash="100000")
    lone, quiet_1, quiet_2 = book.accounts
    r_lone = make_recommendation(engine, book, lone, [(book.a, "sell", 10)])
    acked = make_recommendation(engine, book, lone, [(book.b, "sell", 10)])
    blocked = [
        make_recommendation(engine, book, a, [(book.c, "buy", 10)]) for a in book.accounts[1:]
    ]
    with UnitOfWork(engine, book.tenant) as uow:
        (order,) = trading.approve(uow, r_lone, "t")
    with UnitOfWork(engine, book.tenant) as uow:
        (acked_order,) = trading.approve(uow, acked, "t")
    with UnitOfWork(engine, book.tenant) as uow:
        trading.approve_many(uow, blocked, "t")
    (block,) = rows(engine, orm.block_orders, tenant_id=book.tenant)
    with UnitOfWork(engine, book.tenant) as uow:  # the venue acknowledged this one
        trading.apply_execution_report(
            uow,
            ExecutionReportV1(
                report_id=f"{acked_order['id']}:1",
                order_id=acked_order["id"],
                account_id=lone,
                instrument=book.b,
                side="sell",
                kind=ReportKind.ACK,
                sequence=1,
                venue_time=datetime.now(UTC),
            ),
        )
    assert _sweep(engine, book.tenant, 0).resent == []  # nothing is due yet
    oid, bid = order["id"], str(block.id)
    for _ in range(2):  # sends 2 and 3 (same order ids: the venue deduplicates)
        result = _sweep(engine, book.tenant, 2)
        assert sorted(result.resent) == sorted([oid, bid])
    (stored,) = rows(engine, orm.orders, id=uuid.UUID(oid))
    assert stored.send_attempts == 3 and stored.status == "sent"
    result = _sweep(engine, book.tenant, 4)
    assert sorted(result.cancel_requested) == sorted([oid, bid])
    kids = rows(engine, orm.orders, block_id=block.id)
    assert {k.status for k in kids} == {"cancel_requested"}
    assert all("no acknowledgement" in (k.reason or "") for k in kids)
    result = _sweep(engine, book.tenant, 6)
    assert sorted(result.expired) == sorted([oid, bid])
    assert rows(engine, orm.orders, id=uuid.UUID(acked_order["id"]))[0].status == "sent"
    (stored,) = rows(engine, orm.orders, id=uuid.UUID(oid))
    assert stored.status == "expired" and "answered neither" in stored.reason
    statuses = {
        r.account_id: r.status for r in rows(engine, orm.rebalances, account_id=[quiet_1, quiet_2])
    }
    assert statuses == {quiet_1: "failed", quiet_2: "failed"}
    assert _sweep(engine, book.tenant, 8).resent == []


def test_each_resend_waits_twice_as_long_as_the_one_before(engine: Any) -> None:
    """Late acknowledgements (our consumers behind the venue's reports) are not answered with
    a duplicate every timeout: after a re-send the next waits two timeouts, then four."""
    book = make_book(engine, n_accounts=1, cash="100000")
    rec = make_recommendation(engine, book, book.accounts[0], [(book.a, "sell", 10)])
    with UnitOfWork(engine, book.tenant) as uow:
        (order,) = trading.approve(uow, rec, "t")
    oid = order["id"]
    assert _sweep(engine, book.tenant, 0.5).resent == []  # within the first timeout
    assert _sweep(engine, book.tenant, 1.5).resent == [oid]  # send 2
    assert _sweep(engine, book.tenant, 1.5).resent == []  # send 2 waits 2 timeouts, not 1
    assert _sweep(engine, book.tenant, 2.5).resent == [oid]  # send 3
    result = _sweep(engine, book.tenant, 3.5)  # send 3 waits 4 timeouts before the cancel
    assert result.resent == [] and result.cancel_requested == []
    assert _sweep(engine, book.tenant, 4.5).cancel_requested == [oid]
    assert _sweep(engine, book.tenant, 1.5).expired == [oid]  # a cancel waits one timeout
    (stored,) = rows(engine, orm.orders, id=uuid.UUID(oid))
    assert stored.status == "expired" and stored.send_attempts == 4


def test_a_resent_order_reaching_the_venue_twice_fills_once(engine: Any) -> None:
    book = make_book(engine, n_accounts=1, cash="100000")
    rec = make_recommendation(engine, book, book.accounts[0], [(book.c, "buy", 30)])
    market = InProcessMarket(engine, book, SimulatedVenue(seed=4, partial_fill_probability=1.0))
    with UnitOfWork(engine, book.tenant) as uow:
        (order,) = trading.approve(uow, rec, "t")
    assert _sweep(engine, book.tenant, 2).resent == [order["id"]]
    market.pump()  # the venue receives both sends and replays its reports for the second
    assert len([p for p in market.placed if p.order_id == order["id"]]) == 2
    assert any(k == "duplicate" for _, k in market.outcomes)
    (stored,) = rows(engine, orm.orders, id=uuid.UUID(order["id"]))
    assert stored.status == "filled" and stored.filled_quantity == 30
    assert positions(engine, book.tenant, book.accounts[0])[0][book.c] == 30


def test_settlement_dates_by_asset_class_and_mismatch_alert(engine: Any) -> None:
    book = make_book(engine, n_accounts=1, cash="100000")
    acct = book.accounts[0]
    market = held_fills(engine, book, acct, [(book.a, "sell", 10), (book.b, "sell", 10)])
    fill_a = next(r for r in market.held if r.instrument == book.a)
    fill_b = next(r for r in market.held if r.instrument == book.b)
    market.confirm(fill_a)
    wrong = SettlementAgent().settle(fill_b, fill_b.venue_time.date(), 1)  # T+1 for a bond
    with UnitOfWork(engine, book.tenant) as uow:
        from rebalancer.service_layer.handlers.settling import apply_settlement_confirmation

        assert apply_settlement_confirmation(uow, wrong)
    stl = {s.instrument: s for s in rows(engine, orm.settlements, account_id=acct)}
    trade = fill_a.venue_time.date()
    cal = BusinessCalendar()
    assert stl[book.a].settle_date == settlement_date(trade, Instrument(book.a), cal)  # T+1
    want_b = settlement_date(trade, Instrument(book.b, settlement_days=2), cal)
    # Settlement also refreshes the drift snapshot and drift alerts: look at settlement alerts.
    alerts = [a for a in rows(engine, orm.alerts, account_id=acct) if a.kind != "drift"]
    assert [a.kind for a in alerts] == ["settlement_date_mismatch"]
    assert alerts[0].key == wrong.settlement_id and str(want_b) in alerts[0].message
    assert stl[book.b].status == "settled"  # the confirmation still applies


def test_failed_settlement_raises_an_alert_and_caps_the_rebalance(engine: Any) -> None:
    book = make_book(engine, n_accounts=1, cash="100000")
    acct = book.accounts[0]
    start, start_cash = positions(engine, book.tenant, acct)
    rec = make_recommendation(engine, book, acct, [(book.a, "sell", 10)])
    market = InProcessMarket(
        engine, book, SimulatedVenue(seed=3), SettlementAgent(fail_probability=1.0)
    )
    with UnitOfWork(engine, book.tenant) as uow:
        trading.approve(uow, rec, "t")
    market.pump()
    (order,) = rows(engine, orm.orders, account_id=acct)
    assert order.status == "filled"
    kinds = [a.kind for a in rows(engine, orm.alerts, account_id=acct) if a.kind != "drift"]
    assert kinds == ["settlement_failed"]
    assert rows(engine, orm.rebalances, account_id=acct)[0].status == "partially_complete"
    assert positions(engine, book.tenant, acct) == (start, start_cash)


def test_buys_wait_for_settled_proceeds_and_the_remainder_is_reoptimized(
    engine: Any, runtime: Any
) -> None:
    book = make_book(engine, n_accounts=1, cash="0")
    acct = book.accounts[0]
    rec = make_recommendation(engine, book, acct, [(book.a, "sell", 50), (book.c, "buy", 260)])
    market = InProcessMarket(engine, book, SimulatedVenue(seed=8), settle=False)
    with UnitOfWork(engine, book.tenant) as uow:
        trading.approve(uow, rec, "t")
    market.pump()
    buy = next(o for o in rows(engine, orm.orders, account_id=acct) if o.side == "buy")
    assert buy.status == "new" and buy.wave == 1  # sold, but the proceeds are unsettled
    assert [p.instrument for p in market.placed] == [book.a]
    market.release()  # the sale settles: now the buy may go, sized to settled cash
    market.settle = True
    market.pump()
    buy = next(o for o in rows(engine, orm.orders, account_id=acct) if o.side == "buy")
    sale = next(s for s in rows(engine, orm.settlements, account_id=acct) if s.side == "sell")
    assert buy.quantity * Decimal("20.1") <= sale.quantity * sale.price  # settled cash only
    assert buy.requested_quantity == 260 and 0 < buy.quantity < 260
    assert "good-faith" in buy.reason and buy.status == "filled"
    shares, cash = positions(engine, book.tenant, acct)
    assert cash >= 0 and shares[book.c] == buy.quantity
    (reb,) = rows(engine, orm.rebalances, account_id=acct)
    assert reb.status == "partially_complete"

    placed_before = len(market.placed)
    with UnitOfWork(engine, book.tenant) as uow:
        follow = reoptimize_remainder(uow, runtime.optimizer, reb.id)
    with UnitOfWork(engine, book.tenant) as uow:
        assert reoptimize_remainder(uow, runtime.optimizer, reb.id) == follow
    (new,) = rows(engine, orm.rebalances, id=follow)
    assert new.reasons == [f"remainder_of:{reb.id}"]
    assert new.status in ("pending_approval", "no_trade")
    (rec_new,) = rows(engine, orm.recommendations, rebalance_id=follow)
    lots = {lot["lot_id"] for lot in rec_new.request["portfolio"]["lots"]}
    assert book.lots[acct][book.a] in lots and any(
        lot["instrument"] == book.c for lot in rec_new.request["portfolio"]["lots"]
    )  # the new state: the bought lot is in, the sale reduced the old one
    assert Decimal(str(rec_new.request["portfolio"]["cash"])) == cash
    market.pump()
    assert len(market.placed) == placed_before  # nothing re-sent
    with UnitOfWork(engine, book.tenant) as uow, pytest.raises(Exception, match="only a partially"):
        reoptimize_remainder(uow, runtime.optimizer, follow)


def test_the_worker_sweeper_resends_due_orders_of_every_tenant(engine: Any) -> None:
    from rebalancer.entrypoints.sweeper import OrderSweeper

    book = make_book(engine, n_accounts=1, cash="100000")
    rec = make_recommendation(engine, book, book.accounts[0], [(book.a, "sell", 5)])
    with UnitOfWork(engine, book.tenant) as uow:
        (order,) = trading.approve(uow, rec, "t")
    with engine.begin() as conn:  # the relay got the order out (timeouts run from then)
        conn.execute(
            sa.update(orm.outbox)
            .where(orm.outbox.c.published_at.is_(None))
            .values(published_at=sa.func.now())
        )
    sweeper = OrderSweeper(engine, timeout=HOUR)
    assert sweeper.sweep_once(datetime.now(UTC) + 2 * HOUR) >= 1
    (stored,) = rows(engine, orm.orders, id=uuid.UUID(order["id"]))
    assert stored.send_attempts == 2 and stored.status == "sent"
