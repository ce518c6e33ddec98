"""An execution report locks its account before it writes the account's cash row, as a
settlement does (real PostgreSQL, two transactions): the other way round the two deadlocked
(27 times in one demo run, each a second lost and a retry)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError
from tradehelpers import InProcessMarket, make_book, make_recommendation

from rebalancer.contracts import EventType, ExecutionReportV1, OrderPlacedV1, parse_payload_as
from rebalancer.service_layer.handlers import trading
from rebalancer.service_layer.unit_of_work import UnitOfWork
from rebalancer.simulators.venue import SimulatedVenue

pytestmark = pytest.mark.integration


def _fill_of_first_order(engine: Any, book: Any, market: InProcessMarket) -> ExecutionReportV1:
    """Send the recommendation's first order to the venue; apply its reports up to its first
    fill and return that fill, not applied."""
    for env in market._events():
        if env.type != EventType.ORDER_PLACED:
            continue
        order = parse_payload_as(env, OrderPlacedV1)
        for report in market.venue.handle_order(order, book.prices[order.instrument]):
            if report.kind.is_fill and report.fill_quantity > 0:
                return report
            market.apply([report])
    raise AssertionError("the venue filled nothing")


def _waiting_on_a_lock(engine: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                sa.text("SELECT count(*) FROM pg_locks WHERE NOT granted")
            ).scalar_one()
            if waiting:
                return
            time.sleep(0.02)
    raise AssertionError("the report's transaction never waited for the account")


def test_report_waits_for_the_account_before_touching_its_cash_row(engine: Any) -> None:
    book = make_book(engine, n_accounts=1, cash="100000")
    acct = book.accounts[0]
    rec = make_recommendation(engine, book, acct, [(book.c, "buy", 100)])
    market = InProcessMarket(engine, book, SimulatedVenue(seed=4), settle=False)
    with UnitOfWork(engine, book.tenant) as uow:
        trading.approve(uow, rec, "t")
    fill = _fill_of_first_order(engine, book, market)
    outcome: dict[str, Any] = {}

    def report() -> None:
        try:
            with UnitOfWork(engine, book.tenant) as uow:
                outcome["result"] = trading.apply_execution_report(uow, fill)
        except Exception as exc:  # surfaced by the assertions below
            outcome["error"] = exc

    with UnitOfWork(engine, book.tenant) as settlement:  # holds the account, as a settlement
        settlement.accounts.lock(acct)
        worker = threading.Thread(target=report)
        worker.start()
        _waiting_on_a_lock(engine)
        # the settlement's next step writes the account's cash row: it must be free, the
        # report waits for the account first
        try:
            settlement.conn.execute(
                sa.text(
                    "SELECT settled FROM cash_balances WHERE account_id = :a FOR UPDATE NOWAIT"
                ),
                {"a": acct},
            ).all()
        except OperationalError as exc:  # LockNotAvailable: the report holds the cash row
            pytest.fail(f"the report locked the cash row before the account: {exc}")
        finally:
            settlement.rollback()
    worker.join(30)
    assert not worker.is_alive()
    assert "error" not in outcome, outcome.get("error")
    assert str(outcome["result"]) == "applied"


def _locking_selects(engine: Any) -> tuple[list[str], Any]:
    """A list that collects the ``SELECT ... FOR UPDATE`` of ``accounts`` run on ``engine``
    and the listener to remove afterwards."""
    seen: list[str] = []

    def listen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM accounts" in statement and "FOR UPDATE" in statement:
            seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", listen)
    return seen, listen


def test_an_account_is_locked_once_per_transaction(engine: Any) -> None:
    book = make_book(engine, n_accounts=2)
    first, second = book.accounts
    seen, listen = _locking_selects(engine)
    try:
        with UnitOfWork(engine, book.tenant) as uow:
            uow.accounts.get(first, lock=True)
            uow.accounts.lock(first)  # held already: not asked again
            uow.accounts.lock(second)
            uow.accounts.lock(second)
            assert len(seen) == 2
            uow.commit()  # the locks end with the transaction ...
            uow.accounts.lock(first)  # ... so the next one takes it again
            assert len(seen) == 3
        with UnitOfWork(engine, book.tenant) as uow:
            uow.accounts.lock(first)
            uow.rollback()  # a rollback ends them too
            uow.accounts.lock(first)
            assert len(seen) == 5
    finally:
        sa.event.remove(engine, "before_cursor_execute", listen)
