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
        assert rows(engine, orm.orders, account_id=acct)[0].status == order_status
        assert (_touches_rebalances(sql_log) > 0) == bool(touched), (kind, sql_log)
    # finished, but its fills await settlement: still trading (the settlement moves it on)
    assert rows(engine, orm.rebalances, account_id=acct)[0].status == "trading"
