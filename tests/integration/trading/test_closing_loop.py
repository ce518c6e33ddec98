"""Closing the loop automatically: a rebalance that ends partly done (rejects, expiries) opens
one follow-up, recommended from the new state, through the service's own event consumer.

The venue and custodian are the in-process simulators (:class:`InProcessMarket`); the service's
``status_updated`` and ``rebalance_triggered`` events are read from the outbox and handed to
:func:`rebalancer.entrypoints.consumers.handle_event` (the Pulsar consumer's code path, with
its ``processed_events`` idempotency), each delivered twice as an at-least-once broker may.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from tradehelpers import InProcessMarket, make_book, make_recommendation, rows

from rebalancer.adapters import orm
from rebalancer.adapters.repositories.coordination import CoordinationRepository
from rebalancer.contracts import EventType, StatusEntity, StatusUpdatedV1, decode
from rebalancer.entrypoints.consumers import handle_event
from rebalancer.service_layer.handlers import closing, trading
from rebalancer.service_layer.unit_of_work import UnitOfWork
from rebalancer.simulators.venue import SimulatedVenue

pytestmark = pytest.mark.integration

READ = {"X-API-Key": "test-read-key"}
BUS_TYPES = (str(EventType.STATUS_UPDATED), str(EventType.REBALANCE_TRIGGERED))


class Bus:
    """The tenant's ``status_updated`` / ``rebalance_triggered`` outbox rows, delivered twice
    each to the service consumer, until no new ones appear."""

    def __init__(self, rt: Any, tenant: str) -> None:
        self.rt = rt
        self.tenant = tenant
        with rt.engine.connect() as conn:
            self.after = int(conn.execute(sa.select(sa.func.max(orm.outbox.c.id))).scalar() or 0)

    def drain(self, rounds: int = 20) -> int:
        delivered = 0
        for _ in range(rounds):
            t = orm.outbox
            with self.rt.engine.connect() as conn:
                found = conn.execute(
                    sa.select(t.c.id, t.c.body)
                    .where(t.c.id > self.after, t.c.type.in_(BUS_TYPES))
                    .order_by(t.c.id)
                ).all()
            if not found:
                return delivered
            self.after = found[-1].id
            for r in found:
                env = decode(bytes(r.body))
                if env.tenant_id != self.tenant:
                    continue
                handle_event(self.rt, env)
                handle_event(self.rt, env)  # redelivered: a no-op
                delivered += 1
        raise AssertionError("the bus did not settle down")


def _runtime(runtime: Any, max_rounds: int) -> Any:
    return dataclasses.replace(
        runtime,
        settings=runtime.settings.model_copy(update={"max_remainder_rounds": max_rounds}),
    )


def _rebalances(engine: Any, acct: str) -> list[Any]:
    return sorted(rows(engine, orm.rebalances, account_id=acct), key=lambda r: r.created_at)


def test_rejected_rebalance_gets_one_follow_up_and_no_follow_up_beyond_the_limit(
    engine: Any, runtime: Any, client: TestClient
) -> None:
    book = make_book(engine, n_accounts=1, cash="1000", tenant="tenant-a")
    acct = book.accounts[0]
    rec = make_recommendation(engine, book, acct, [(book.a, "sell", 30), (book.c, "buy", 100)])
    bus = Bus(_runtime(runtime, 1), book.tenant)
    market = InProcessMarket(engine, book, SimulatedVenue(seed=1, reject_probability=1.0))
    with UnitOfWork(engine, book.tenant) as uow:
        trading.approve(uow, rec, "t")
    market.pump()
    (original,) = _rebalances(engine, acct)
    assert original.status == "failed"  # every order rejected: nothing traded
    assert {o.status for o in rows(engine, orm.orders, account_id=acct)} == {"rejected"}

    bus.drain()
    original, follow = _rebalances(engine, acct)
    assert follow.parent_rebalance_id == original.id
    assert follow.remainder_round == 1
    assert follow.reasons == [f"remainder_of:{original.id}"]
    assert follow.status == "pending_approval"  # recommended by the rebalance_triggered handler
    (follow_rec,) = rows(engine, orm.recommendations, rebalance_id=follow.id)
    assert follow_rec.request["portfolio"]["cash"] is not None

    # The explicit endpoint's handler returns the same follow-up; a republished status event
    # (new event id, so not deduplicated by processed_events) opens nothing either.
    with UnitOfWork(engine, book.tenant) as uow:
        assert closing.reoptimize_remainder(uow, runtime.optimizer, original.id) == follow.id
    copy = StatusUpdatedV1(
        entity=StatusEntity.REBALANCE,
        entity_id=str(original.id),
        account_id=acct,
        status="failed",
        previous="trading",
    )
    with UnitOfWork(engine, book.tenant) as uow:
        assert closing.on_status_updated(uow, copy, max_rounds=5) is None
        # and the unique parent link refuses a second row even past every check
        assert (
            CoordinationRepository(uow.conn, uow.tenant_id).insert_follow_up(original, ["x"], 1)
            is None
        )
        uow.commit()
    assert len(_rebalances(engine, acct)) == 2
    got = client.get(f"/v1/rebalances/{original.id}", headers=READ).json()
    assert got["follow_up_rebalance_id"] == str(follow.id) and got["remainder_round"] == 0
    got = client.get(f"/v1/rebalances/{follow.id}", headers=READ).json()
    assert got["parent_rebalance_id"] == str(original.id) and got["remainder_round"] == 1

    # The follow-up trades and is rejected again: round 1 is the limit, nothing more opens.
    with UnitOfWork(engine, book.tenant) as uow:
        trading.approve(uow, follow_rec.id, "t")
    market.pump()
    bus.drain()
    rebs = _rebalances(engine, acct)
    assert [r.status for r in rebs] == ["failed", "failed"]
    audit = rows(engine, orm.audit_log, tenant_id=book.tenant, action="follow_up")
    assert [a.entity_id for a in audit] == [str(original.id)]

    # With a limit of 2 the same event would open round 2 (the limit is the setting).
    second = StatusUpdatedV1(
        entity=StatusEntity.REBALANCE,
        entity_id=str(follow.id),
        account_id=acct,
        status="failed",
        previous="trading",
    )
    with UnitOfWork(engine, book.tenant) as uow:
        new_id = closing.on_status_updated(uow, second, max_rounds=2)
        uow.commit()
    assert new_id is not None
    (third,) = rows(engine, orm.rebalances, id=new_id)
    assert (third.parent_rebalance_id, third.remainder_round) == (follow.id, 2)


def test_expired_remainder_gets_one_follow_up_from_the_new_state(engine: Any, runtime: Any) -> None:
    book = make_book(engine, n_accounts=1, cash="100000")
    acct = book.accounts[0]
    rec = make_recommendation(engine, book, acct, [(book.a, "sell", 40)])
    bus = Bus(_runtime(runtime, 1), book.tenant)
    venue = SimulatedVenue(seed=5, partial_fill_probability=1.0, stall_probability=1.0)
    market = InProcessMarket(engine, book, venue)
    with UnitOfWork(engine, book.tenant) as uow:
        trading.approve(uow, rec, "t")
    market.pump()  # partial fills, then the rest expires at the close; the fills settle
    (order,) = rows(engine, orm.orders, account_id=acct)
    assert order.status == "expired" and 0 < order.filled_quantity < order.quantity
    (original,) = _rebalances(engine, acct)
    assert original.status == "partially_complete"

    assert bus.drain() >= 1
    assert bus.drain() == 0
    original, follow = _rebalances(engine, acct)
    assert (follow.parent_rebalance_id, follow.remainder_round) == (original.id, 1)
    assert follow.status in ("pending_approval", "no_trade")
    (follow_rec,) = rows(engine, orm.recommendations, rebalance_id=follow.id)
    held = {
        lot["lot_id"]: float(lot["quantity"]) for lot in follow_rec.request["portfolio"]["lots"]
    }
    assert held[book.lots[acct][book.a]] == pytest.approx(100 - float(order.filled_quantity))


def test_no_automatic_follow_up_when_turned_off_or_nothing_traded(
    engine: Any, runtime: Any
) -> None:
    book = make_book(engine, n_accounts=1, cash="1000")
    acct = book.accounts[0]
    rec = make_recommendation(engine, book, acct, [(book.a, "sell", 30)])
    bus = Bus(_runtime(runtime, 0), book.tenant)
    market = InProcessMarket(engine, book, SimulatedVenue(seed=2, reject_probability=1.0))
    with UnitOfWork(engine, book.tenant) as uow:
        trading.approve(uow, rec, "t")
    market.pump()
    assert bus.drain() >= 1
    (reb,) = _rebalances(engine, acct)
    assert reb.status == "failed"
    # a rebalance that failed before trading (e.g. in the optimizer) has no remainder
    with UnitOfWork(engine, book.tenant) as uow:
        rid = uow.rebalancing.create_rebalance(acct, "failed", ["test"], 0)
        uow.commit()
    event = StatusUpdatedV1(
        entity=StatusEntity.REBALANCE,
        entity_id=str(rid),
        account_id=acct,
        status="failed",
        previous="requested",
    )
    with UnitOfWork(engine, book.tenant) as uow:
        assert closing.on_status_updated(uow, event, max_rounds=3) is None
    assert {r.id for r in _rebalances(engine, acct)} == {reb.id, rid}
    assert uuid.UUID(str(reb.id)) != rid


def test_concurrent_automatic_and_explicit_paths_open_one_follow_up(
    engine: Any, runtime: Any
) -> None:
    import threading

    book = make_book(engine, n_accounts=1, cash="1000")
    acct = book.accounts[0]
    rec = make_recommendation(engine, book, acct, [(book.a, "sell", 30)])
    market = InProcessMarket(engine, book, SimulatedVenue(seed=3, reject_probability=1.0))
    with UnitOfWork(engine, book.tenant) as uow:
        trading.approve(uow, rec, "t")
    market.pump()
    (original,) = _rebalances(engine, acct)
    assert original.status == "failed"
    barrier = threading.Barrier(4)
    got: list[Any] = []
    errors: list[BaseException] = []

    def automatic() -> None:
        event = StatusUpdatedV1(
            entity=StatusEntity.REBALANCE,
            entity_id=str(original.id),
            account_id=acct,
            status="failed",
            previous="trading",
        )
        try:
            barrier.wait()
            with UnitOfWork(engine, book.tenant) as uow:
                got.append(closing.on_status_updated(uow, event, max_rounds=1))
                uow.commit()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def explicit() -> None:
        try:
            barrier.wait()
            with UnitOfWork(engine, book.tenant) as uow:
                got.append(closing.reoptimize_remainder(uow, runtime.optimizer, original.id))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=f) for f in (automatic, automatic, explicit, explicit)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    follow_ups = [r for r in _rebalances(engine, acct) if r.parent_rebalance_id == original.id]
    assert len(follow_ups) == 1
    assert {g for g in got if g is not None} == {follow_ups[0].id}
