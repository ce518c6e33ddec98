"""The batch handlers without Pulsar: fan-out rules, idempotent chunks, per-account failures."""

from __future__ import annotations

import gc
import uuid
from datetime import date
from typing import Any

import sqlalchemy as sa
from batchhelpers import (
    computed_batch,
    load_book,
    progress,
    queued_items,
    recommendations_per_account,
)

from rebalancer.adapters import orm
from rebalancer.contracts import decode
from rebalancer.optimizer import Recommender
from rebalancer.service_layer.handlers.batch import recommend_chunk, start_batch
from rebalancer.service_layer.handlers.recommending import request_rebalance
from rebalancer.service_layer.unit_of_work import UnitOfWork

TENANT = "tenant-a"


def test_fan_out_joins_requested_rebalances_and_chunks_are_idempotent(runtime: Any) -> None:
    engine = runtime.engine
    book, _ = load_book(engine, 5, n_instruments=6)
    joined = book.accounts[0][0]
    with UnitOfWork(engine, TENANT) as uow:
        manual, _ = request_rebalance(uow, joined, ["manual"], 0)
    with UnitOfWork(engine, TENANT) as uow:
        batch = start_batch(uow, book.model.id, actor="test")
        uow.commit()
    assert (batch.total, batch.queued, batch.skipped) == (5, 5, 0)
    items = queued_items(engine, batch.batch_id)
    assert len(items) == 5 and str(manual) in {p.rebalance_id for _, p in items}
    engine_ = Recommender()
    with UnitOfWork(engine, TENANT) as uow:
        first = recommend_chunk(uow, engine_, items[:3])
    with UnitOfWork(engine, TENANT) as uow:
        again = recommend_chunk(uow, engine_, items)  # 3 redelivered, 2 new
    assert len(first.computed) == 3 and again.already_done == 3 and len(again.computed) == 2
    assert set(first.seconds) == {"lock", "read", "build", "solve", "write"}
    done = progress(engine, TENANT, batch.batch_id)
    assert done["status"] == "finished" and done["done"] == 5
    assert recommendations_per_account(engine, batch.batch_id) == {a[0]: 1 for a in book.accounts}
    with engine.connect() as conn:
        reasons = conn.execute(
            sa.select(orm.rebalances.c.reasons).where(orm.rebalances.c.id == manual)
        ).scalar_one()
    assert reasons[0] == "manual" and f"batch:{batch.batch_id}" in reasons


def test_an_account_that_cannot_be_priced_fails_alone(runtime: Any) -> None:
    engine = runtime.engine
    book, _ = load_book(engine, 4, n_instruments=6)
    broken = book.accounts[1][0]
    unpriced = f"{book.model.id}-X".upper()
    with engine.begin() as conn:
        conn.execute(
            sa.insert(orm.instruments).values(id=unpriced, asset_class="equity", sector="tech")
        )
        conn.execute(
            sa.insert(orm.tax_lots).values(
                lot_id=f"{broken}-x",
                account_id=broken,
                instrument=unpriced,
                quantity=5,
                cost_basis=10,
                acquired=date(2024, 1, 2),
            )
        )
    with UnitOfWork(engine, TENANT) as uow:
        batch = start_batch(uow, book.model.id, actor="test")
        uow.commit()
    with UnitOfWork(engine, TENANT) as uow:
        res = recommend_chunk(uow, Recommender(), queued_items(engine, batch.batch_id))
    assert len(res.failed) == 1 and len(res.computed) == 3
    done = progress(engine, TENANT, batch.batch_id)
    assert done["status"] == "finished" and done["counts"]["failed"] == 1
    with engine.connect() as conn:
        detail = conn.execute(
            sa.select(orm.outbox.c.body).where(
                orm.outbox.c.type == "status_updated",
                orm.outbox.c.key == broken,
                orm.outbox.c.body.contains(b'"failed"'),
            )
        ).scalar_one()
    assert unpriced.encode() in bytes(detail) and b"no price" in bytes(detail)


def test_a_model_without_followers_finishes_at_once(runtime: Any) -> None:
    book, _ = load_book(runtime.engine, 0, n_instruments=3)
    with UnitOfWork(runtime.engine, TENANT) as uow:
        batch = start_batch(uow, book.model.id, actor="test")
        uow.commit()
    assert (batch.total, batch.queued) == (0, 0)
    assert progress(runtime.engine, TENANT, batch.batch_id)["status"] == "finished"


class _BatchedEngine:
    """The real engine behind an ``analyze_many`` (the shape a batched solver offers)."""

    def __init__(self) -> None:
        self.inner = Recommender()
        self.batches: list[int] = []
        self.collector_on: list[bool] = []

    def analyze(self, request: Any) -> Any:
        raise AssertionError("the chunk must go through analyze_many")

    def analyze_many(self, requests: list[Any]) -> list[Any]:
        self.batches.append(len(requests))
        self.collector_on.append(gc.isenabled())
        return [self.inner.analyze(r) for r in requests]


def test_a_chunk_uses_analyze_many_when_the_engine_has_it(runtime: Any) -> None:
    book, _ = load_book(runtime.engine, 4, n_instruments=5)
    with UnitOfWork(runtime.engine, TENANT) as uow:
        batch = start_batch(uow, book.model.id, actor="test")
        uow.commit()
    engine = _BatchedEngine()
    with UnitOfWork(runtime.engine, TENANT) as uow:
        res = recommend_chunk(uow, engine, queued_items(runtime.engine, batch.batch_id))
    assert engine.batches == [4] and len(res.computed) == 4
    # automatic collection is paused for the whole chunk (not only inside each analysis) and
    # back on once the chunk is done
    assert engine.collector_on == [False] and gc.isenabled()


def _rebalance_in(
    engine: sa.Engine, account_id: str, status: str, recommended: bool = False
) -> uuid.UUID:
    """Open a rebalance of the account and put it in ``status`` (with a recommendation in the
    same status when ``recommended``)."""
    with UnitOfWork(engine, TENANT) as uow:
        rid, _ = request_rebalance(uow, account_id, ["manual"], 0, commit=False)
        r = orm.rebalances
        uow.conn.execute(sa.update(r).where(r.c.id == rid).values(status=status))
        if recommended:
            uow.rebalancing.add_recommendation(
                rid, account_id, "rebalance", status, 1, {}, {"trades": []}
            )
        uow.commit()
    return rid


def test_fan_out_skips_only_rebalances_in_flight(runtime: Any) -> None:
    """A finished rebalance (partially complete or failed) does not keep its account out of a
    batch: only one awaiting approval or trading (a person's call, or orders in flight) does."""
    engine = runtime.engine
    book, _ = load_book(engine, 5, n_instruments=6)
    ids = [a[0] for a in book.accounts]
    statuses = ["partially_complete", "failed", "trading", "pending_approval"]
    old: dict[str, uuid.UUID] = {}
    for account_id, status in zip(ids, statuses, strict=False):
        old[account_id] = _rebalance_in(engine, account_id, status)
    with UnitOfWork(engine, TENANT) as uow:
        batch = start_batch(uow, book.model.id, actor="test")
        uow.commit()
    assert (batch.total, batch.queued, batch.skipped) == (5, 3, 2)
    items = queued_items(engine, batch.batch_id)
    queued = {p.account_id: uuid.UUID(p.rebalance_id) for _, p in items}
    assert set(queued) == {ids[0], ids[1], ids[4]}
    assert queued[ids[0]] != old[ids[0]] and queued[ids[1]] != old[ids[1]]  # new rebalances
    r = orm.rebalances
    with engine.connect() as conn:
        rows = conn.execute(sa.select(r.c.id, r.c.status, r.c.batch_id)).all()
    by_id = {row.id: row for row in rows}
    for account_id, status in zip(ids, statuses, strict=False):
        assert by_id[old[account_id]].status == status  # untouched
        assert by_id[old[account_id]].batch_id is None
    assert all(by_id[rid].batch_id == batch.batch_id for rid in queued.values())


def test_a_batch_can_supersede_recommendations_awaiting_approval(runtime: Any) -> None:
    """``supersede_pending``: a recommendation still awaiting approval (computed before the
    model changed) is rejected with the batch's id as the reason and its account recomputed;
    one whose orders are trading is still skipped."""

    engine = runtime.engine
    book, _ = load_book(engine, 3, n_instruments=6)
    ids = [a[0] for a in book.accounts]
    old: dict[str, uuid.UUID] = {}
    for account_id, status in zip(ids, ["pending_approval", "trading"], strict=False):
        old[account_id] = _rebalance_in(engine, account_id, status, recommended=True)
    with UnitOfWork(engine, TENANT) as uow:
        kept = start_batch(uow, book.model.id, actor="test")
        uow.rollback()  # without superseding: both skipped (nothing written)
    assert (kept.queued, kept.skipped, kept.superseded) == (1, 2, 0)
    with UnitOfWork(engine, TENANT) as uow:
        batch = start_batch(uow, book.model.id, actor="test", supersede_pending=True)
        uow.commit()
    assert (batch.total, batch.queued, batch.skipped, batch.superseded) == (3, 2, 1, 1)
    items = queued_items(engine, batch.batch_id)
    queued = {p.account_id: uuid.UUID(p.rebalance_id) for _, p in items}
    assert set(queued) == {ids[0], ids[2]} and queued[ids[0]] != old[ids[0]]
    r, rec, o = orm.rebalances, orm.recommendations, orm.outbox
    with engine.connect() as conn:
        status = dict(conn.execute(sa.select(r.c.id, r.c.status)).all())
        rec_status = dict(conn.execute(sa.select(rec.c.rebalance_id, rec.c.status)).all())
        bodies = conn.execute(sa.select(o.c.body).where(o.c.type == "status_updated")).scalars()
        events = [decode(bytes(b)).payload for b in bodies]
    assert status[old[ids[0]]] == "rejected" and rec_status[old[ids[0]]] == "rejected"
    assert status[old[ids[1]]] == "trading" and rec_status[old[ids[1]]] == "trading"
    (rejected,) = [
        e for e in events if e["entity_id"] == str(old[ids[0]]) and e["status"] == "rejected"
    ]
    assert (rejected["status"], rejected["previous"]) == ("rejected", "pending_approval")
    assert rejected["detail"] == f"superseded by batch {batch.batch_id}"


def test_cancelling_a_batch_stops_what_no_worker_computed(runtime: Any) -> None:
    """Cancel: the rebalances still ``requested`` finish as ``cancelled`` and the workers skip
    their messages; computed ones are kept, or rejected with ``reject_pending``."""
    from rebalancer.service_layer.handlers.batch import cancel_batch

    engine = runtime.engine
    book, _ = load_book(engine, 5, n_instruments=6)
    with UnitOfWork(engine, TENANT) as uow:
        batch = start_batch(uow, book.model.id, actor="test")
        uow.commit()
    items = queued_items(engine, batch.batch_id)
    with UnitOfWork(engine, TENANT) as uow:
        first = recommend_chunk(uow, Recommender(), items[:2])
    assert len(first.computed) == 2
    with UnitOfWork(engine, TENANT) as uow:
        done = cancel_batch(uow, batch.batch_id, actor="test")
        uow.commit()
    assert (done.cancelled, done.rejected, done.stopped) == (3, 0, True)
    with UnitOfWork(engine, TENANT) as uow:
        late = recommend_chunk(uow, Recommender(), items)  # the messages arrive after all
    assert not late.computed and late.already_done == 5
    view = progress(engine, TENANT, batch.batch_id)
    assert view["status"] == "cancelled" and view["finished_at"] is not None
    assert view["counts"]["cancelled"] == 3 and view["done"] == 5
    computed = {s: n for s, n in view["counts"].items() if s != "cancelled"}
    assert sum(computed.values()) == 2 and set(computed) <= {"pending_approval", "no_trade"}

    with UnitOfWork(engine, TENANT) as uow:  # again, now rejecting what awaits approval
        again = cancel_batch(uow, batch.batch_id, actor="test", reject_pending=True)
        uow.commit()
    waiting = computed.get("pending_approval", 0)
    assert waiting > 0  # the book's drift leaves something to approve
    assert (again.cancelled, again.rejected, again.stopped) == (0, waiting, False)
    after = progress(engine, TENANT, batch.batch_id)["counts"]
    assert after.get("rejected", 0) == waiting and "pending_approval" not in after
    o = orm.outbox
    with engine.connect() as conn:
        bodies = conn.execute(sa.select(o.c.body).where(o.c.type == "status_updated")).scalars()
        events = [decode(bytes(b)).payload for b in bodies]
    mine = [e for e in events if e["detail"] == f"batch {batch.batch_id} cancelled"]
    assert sorted(e["status"] for e in mine) == ["cancelled"] * 3 + ["rejected"] * waiting
    assert {e["previous"] for e in mine if e["status"] == "cancelled"} == {"requested"}


def test_approving_a_batch_chunk_by_chunk_creates_each_order_once(runtime: Any) -> None:
    """``approve_batch``: as many recommendations per call as asked, a chunk per transaction;
    calling again approves the rest, and once none is left a call changes nothing."""
    from rebalancer.service_layer.handlers.batch import approve_batch

    engine = runtime.engine
    book, batch_id = computed_batch(engine, 6)
    waiting = progress(engine, TENANT, batch_id)["counts"].get("pending_approval", 0)
    assert waiting >= 3  # the book's drift leaves recommendations to approve

    def new_uow() -> UnitOfWork:
        return UnitOfWork(engine, TENANT)

    first = approve_batch(new_uow, batch_id, actor="t", max_accounts=3, chunk_size=2)
    assert (first.approved, first.remaining) == (3, waiting - 3) and first.orders > 0
    rest = approve_batch(new_uow, batch_id, actor="t", chunk_size=2)
    assert (rest.approved, rest.remaining) == (waiting - 3, 0)
    none = approve_batch(new_uow, batch_id, actor="t")
    assert (none.approved, none.orders, none.remaining) == (0, 0, 0)
    counts = progress(engine, TENANT, batch_id)["counts"]
    assert "pending_approval" not in counts
    assert sum(n for s, n in counts.items() if s not in ("no_trade", "failed")) == waiting
    rec, o = orm.recommendations, orm.orders
    with engine.connect() as conn:
        approved = (
            conn.execute(
                sa.select(rec.c.id).where(
                    rec.c.status == "approved", rec.c.account_id.in_([a[0] for a in book.accounts])
                )
            )
            .scalars()
            .all()
        )
        per_rec = dict(
            conn.execute(
                sa.select(o.c.recommendation_id, sa.func.count())
                .where(o.c.recommendation_id.in_(approved))
                .group_by(o.c.recommendation_id)
            ).all()
        )
    assert len(approved) == waiting and set(per_rec) == set(approved)
    assert sum(per_rec.values()) == first.orders + rest.orders  # each order once


def test_rejecting_a_batch_leaves_a_recommendation_being_approved_alone(runtime: Any) -> None:
    """An approval locks its recommendation before its account; a batch's cancel (or a
    superseding fan-out, which holds the accounts) skips a recommendation locked that way
    instead of waiting for it, so the two can never deadlock: that one goes on to trade."""
    from rebalancer.service_layer.handlers.batch import cancel_batch

    engine = runtime.engine
    _, batch_id = computed_batch(engine, 4)
    rec, r = orm.recommendations, orm.rebalances
    pending_q = (
        sa.select(rec.c.id)
        .join(r, r.c.id == rec.c.rebalance_id)
        .where(r.c.batch_id == batch_id, rec.c.status == "pending_approval")
        .order_by(rec.c.id)
    )
    with engine.connect() as conn:
        pending = list(conn.execute(pending_q).scalars())
    assert len(pending) >= 2  # the book's drift leaves recommendations to approve
    with engine.connect() as held:  # an approval in progress holds the first one
        held.execute(sa.select(rec.c.id).where(rec.c.id == pending[0]).with_for_update())
        with UnitOfWork(engine, TENANT) as uow:
            uow.conn.execute(sa.text("SET LOCAL lock_timeout = '5s'"))  # a wait would fail
            done = cancel_batch(uow, batch_id, actor="test", reject_pending=True)
            uow.commit()
        held.rollback()
    assert done.rejected == len(pending) - 1
    with engine.connect() as conn:
        status = dict(
            conn.execute(sa.select(rec.c.id, rec.c.status).where(rec.c.id.in_(pending))).all()
        )
    assert status[pending[0]] == "pending_approval"
    assert all(status[p] == "rejected" for p in pending[1:])
