"""The whole trading loop on the real broker: worker consumers and outbox relay, simulated venue
and custodian on Pulsar topics, a batch approval traded as block orders."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import pytest
from tradehelpers import make_book, make_recommendation, positions, rows, settled_deltas, unique

from rebalancer.adapters import orm
from rebalancer.entrypoints.consumers import Worker
from rebalancer.entrypoints.simulate import Counterparties
from rebalancer.sample_book import build_sample_book
from rebalancer.service_layer.handlers import trading
from rebalancer.service_layer.unit_of_work import UnitOfWork
from rebalancer.simulators.venue import SimulatedVenue

pytestmark = pytest.mark.integration
TERMINAL = {"complete", "partially_complete", "failed"}


def test_block_orders_through_pulsar_settle_into_positions(runtime: Any, engine: Any) -> None:
    rt = dataclasses.replace(
        runtime,
        stop_event=threading.Event(),
        settings=runtime.settings.model_copy(update={"subscription": unique("svc")}),
    )
    book = make_book(engine, n_accounts=3, cash="100000")
    recs = [
        make_recommendation(engine, book, a, [(book.a, "sell", 10 * (i + 1)), (book.c, "buy", 40)])
        for i, a in enumerate(book.accounts)
    ]
    initial = {a: positions(engine, book.tenant, a) for a in book.accounts}
    venue = SimulatedVenue(
        seed=12, partial_fill_probability=0.7, duplicate_probability=0.3, reorder_probability=0.5
    )
    worker = Worker(rt)
    sim = Counterparties(
        rt,
        build_sample_book(n_accounts=1).price_feed(seed=3),
        venue,
        settlement_days=book.settlement_days,
    )
    worker.start()
    sim.start()
    try:
        with UnitOfWork(engine, book.tenant) as uow:
            trading.approve_many(uow, recs, "t")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            statuses = {r.status for r in rows(engine, orm.rebalances, account_id=book.accounts)}
            if statuses <= TERMINAL:
                break
            time.sleep(0.2)
    finally:
        rt.stop_event.set()
        worker.join()
        sim.join()
    assert statuses == {"complete"}, statuses
    blocks = rows(engine, orm.block_orders, tenant_id=book.tenant)
    assert len(blocks) == 2 and {b.status for b in blocks} == {"filled"}
    orders = rows(engine, orm.orders, account_id=book.accounts)
    assert {o.status for o in orders} == {"filled"}
    for acct in book.accounts:
        shares, cash = positions(engine, book.tenant, acct)
        delta, cash_delta, stl = settled_deltas(engine, acct)
        start, start_cash = initial[acct]
        assert shares[book.a] == start[book.a] + delta[book.a] and shares[book.c] == 40
        assert cash == start_cash + cash_delta
        assert len({s.report_id for s in stl}) == len(stl)


def test_a_rejected_rebalance_opens_its_follow_up_through_pulsar(runtime: Any, engine: Any) -> None:
    """Closing the loop on the real broker: the worker consumes the rebalance's own
    ``status_updated`` event, opens one follow-up and recommends it (``rebalance_triggered``)."""
    rt = dataclasses.replace(
        runtime,
        stop_event=threading.Event(),
        settings=runtime.settings.model_copy(
            update={"subscription": unique("svc"), "max_remainder_rounds": 1}
        ),
    )
    book = make_book(engine, n_accounts=1, cash="1000")
    acct = book.accounts[0]
    rec = make_recommendation(engine, book, acct, [(book.a, "sell", 30), (book.b, "sell", 20)])
    worker = Worker(rt)
    sim = Counterparties(
        rt,
        build_sample_book(n_accounts=1).price_feed(seed=3),
        SimulatedVenue(seed=4, reject_probability=1.0),
        settlement_days=book.settlement_days,
    )
    worker.start()
    sim.start()
    try:
        with UnitOfWork(engine, book.tenant) as uow:
            trading.approve(uow, rec, "t")
        deadline = time.monotonic() + 120
        follow: list[Any] = []
        while time.monotonic() < deadline:
            follow = [
                r for r in rows(engine, orm.rebalances, account_id=acct) if r.parent_rebalance_id
            ]
            if follow and follow[0].status != "requested":
                break
            time.sleep(0.2)
        time.sleep(1.0)  # any duplicate would have landed by now
    finally:
        rt.stop_event.set()
        worker.join()
        sim.join()
    rebs = rows(engine, orm.rebalances, account_id=acct)
    original = next(r for r in rebs if r.parent_rebalance_id is None)
    assert original.status == "failed"
    (only,) = [r for r in rebs if r.parent_rebalance_id is not None]
    assert only.parent_rebalance_id == original.id and only.remainder_round == 1
    assert only.status in ("pending_approval", "no_trade")
    assert len(rows(engine, orm.recommendations, rebalance_id=only.id)) == 1
