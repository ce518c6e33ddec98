"""Only a report that finishes an order touches its rebalance: an acknowledgement or a partial
fill neither locks nor counts the rebalance (its status is ``trading`` while any order works,
and its buy wave waits for the first wave to finish), while the fill that finishes the last
order moves the status on (to ``trading`` until settlement, then ``complete``)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from tradehelpers import make_book, make_recommendation, rows

from rebalancer.adapters import orm
from rebalancer.contracts import ExecutionReportV1, ReportKind
from rebalancer.service_layer.handlers import trading
from rebalancer.service_layer.unit_of_work import UnitOfWork

pytestmark = pytest.mark.integration


def _report(order: dict[str, object], kind: ReportKind, seq: int, qty: int, cum: int) -> Any:
    return ExecutionReportV1(
        report_id=f"{order['id']}:{seq}",
        order_id=str(order["id"]),
        account_id=str(order["account_id"]),
        instrument=str(order["instrument"]),
        side=str(order["side"]),
        kind=kind,
        fill_quantity=Decimal(qty),
        fill_price=Decimal(100) if qty else None,
        cumulative_quantity=Decimal(cum),
        sequence=seq,
        venue_time=datetime.now(UTC),
    )


def _touches_rebalances(statements: list[str]) -> int:
    return sum("rebalances" in q for q in statements)


def test_only_the_report_that_finishes_an_order_touches_the_rebalance(
    engine: sa.Engine, sql_log: list[str]
) -> None:
    book = make_book(engine, n_accounts=1, cash="100000")
    acct = book.accounts[0]
    rec = make_recommendation(engine, book, acct, [(book.a, "sell", 10)])
    with UnitOfWork(engine, book.tenant) as uow:
        (order,) = trading.approve(uow, rec, "t")
    (reb,) = rows(engine, orm.rebalances, account_id=acct)
    assert reb.status == "trading"
    steps = [
        (ReportKind.ACK, 1, 0, 0, "sent", 0),
        (ReportKind.PARTIAL_FILL, 2, 4, 4, "partially_filled", 0),
        (ReportKind.FILL, 3, 6, 10, "filled", 1),
    ]
    for kind, seq, qty, cum, order_status, touched in steps:
        sql_log.clear()
        with UnitOfWork(engine, book.tenant) as uow:
            trading.apply_execution_report(uow, _report(order, kind, seq, qty, cum))
        sent = list(sql_log)
        assert rows(engine, orm.orders, account_id=acct)[0].status == order_status
        assert (_touches_rebalances(sent) > 0) == bool(touched), (kind, sent)
        if kind == ReportKind.ACK:
            # its account found and locked by one statement, then its order locked; the
            # report recorded and the order updated: nothing else
            assert len(sent) == 4, sent
            assert "FOR UPDATE" in sent[0] and "orders" in sent[0]
    # finished, but its fills await settlement: still trading (the settlement moves it on)
    assert rows(engine, orm.rebalances, account_id=acct)[0].status == "trading"


def test_a_sale_in_two_fills_settles_its_named_lots_in_order(engine: sa.Engine) -> None:
    """Each settlement of a sell takes the next shares of the order's named lots, after those
    the order's earlier settlements took (read with the order by one statement)."""
    from datetime import date

    from tradehelpers import unique

    from rebalancer.domain.model import TaxLot
    from rebalancer.service_layer.handlers.settling import apply_settlement_confirmation
    from rebalancer.simulators.settlement import SettlementAgent

    book = make_book(engine, n_accounts=1, cash="100000")
    acct = book.accounts[0]
    first, second = book.lots[acct][book.a], unique("lot")  # 100 shares at 80, then 50 at 120
    lot = TaxLot(second, book.a, Decimal(50), Decimal(120), date(2023, 5, 2))
    with UnitOfWork(engine, book.tenant) as uow:
        uow.accounts.save_lots(acct, [lot])
        uow.commit()
    rec = make_recommendation(engine, book, acct, [(book.a, "sell", 120)])
    named = [{"lot_id": first, "quantity": 100}, {"lot_id": second, "quantity": 20}]
    trade = {"instrument": book.a, "side": "sell", "quantity": 120, "cost_bps": 5.0}
    with UnitOfWork(engine, book.tenant) as uow:  # all of the first lot, 20 of the second
        uow.conn.execute(
            sa.update(orm.recommendations)
            .where(orm.recommendations.c.id == rec)
            .values(response={"trades": [{**trade, "lots": named}]})
        )
        uow.commit()
    with UnitOfWork(engine, book.tenant) as uow:
        (order,) = trading.approve(uow, rec, "t")
    fills = [
        _report(order, ReportKind.PARTIAL_FILL, 1, 60, 60),
        _report(order, ReportKind.FILL, 2, 60, 120),
    ]
    agent = SettlementAgent()
    for fill in fills:
        with UnitOfWork(engine, book.tenant) as uow:
            trading.apply_execution_report(uow, fill)
        with UnitOfWork(engine, book.tenant) as uow:
            assert apply_settlement_confirmation(uow, agent.settle(fill, fill.venue_time.date()))
    left = {lot.lot_id: lot.quantity for lot in rows(engine, orm.tax_lots, account_id=acct)}
    assert first not in left and left[second] == Decimal(30)
    gains = sorted(
        (g.lot_id, g.quantity) for g in rows(engine, orm.realized_gains, account_id=acct)
    )
    # the first fill took 60 of the first lot; the second the first lot's last 40, then 20
    assert gains == sorted([(first, Decimal(60)), (first, Decimal(40)), (second, Decimal(20))])
