"""Shared inputs of a batch: the covariance is estimated once per instrument set, stored once
(``risk_models``, migration 0004) and referenced by each recommendation; the stored request
still reads back whole, and a batch recommendation is read and approved over the API."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import sqlalchemy as sa
from batchhelpers import load_book, queued_items
from fastapi.testclient import TestClient

from rebalancer.adapters import orm
from rebalancer.adapters.repositories.batch_results import full_request, stored_request
from rebalancer.analytics.requests import involved_instruments, make_request
from rebalancer.optimizer import Recommender
from rebalancer.optimizer.schemas import AnalyzeRequest
from rebalancer.service_layer.handlers.batch import inputs, recommend_chunk, start_batch
from rebalancer.service_layer.handlers.recommending import default_policy
from rebalancer.service_layer.unit_of_work import UnitOfWork

TENANT = "tenant-a"
ADMIN = {"X-API-Key": "test-admin-key"}
READ = {"X-API-Key": "test-read-key"}


def _batch_recommendations(engine: sa.Engine, batch_id: uuid.UUID) -> list[Any]:
    r, rec = orm.recommendations, orm.rebalances
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(r.c.id, r.c.account_id, r.c.status, r.c.request, r.c.risk_model_id)
                .join(rec, rec.c.id == r.c.rebalance_id)
                .where(rec.c.batch_id == batch_id)
            ).all()
        )


def _run_batch(engine: sa.Engine, n_accounts: int, chunks: int) -> tuple[Any, uuid.UUID]:
    book, _ = load_book(engine, n_accounts, n_instruments=6)
    with UnitOfWork(engine, TENANT) as uow:
        batch = start_batch(uow, book.model.id, actor="test")
        uow.commit()
    items = queued_items(engine, batch.batch_id)
    size = -(-len(items) // chunks)
    solver = Recommender()
    for k in range(0, len(items), size):
        inputs._stored.clear()  # each chunk as if from a fresh worker process
        with UnitOfWork(engine, TENANT) as uow:
            res = recommend_chunk(uow, solver, items[k : k + size])
        assert not res.failed
    return book, batch.batch_id


def test_one_risk_model_is_stored_per_batch_and_requests_read_back_as_solved(
    runtime: Any,
) -> None:
    engine = runtime.engine
    book, batch_id = _run_batch(engine, 6, chunks=3)
    recs = _batch_recommendations(engine, batch_id)
    assert len(recs) == 6
    assert all("risk_model" not in r.request for r in recs)
    assert len({r.risk_model_id for r in recs}) == 1 and recs[0].risk_model_id is not None
    with engine.connect() as conn:
        stored = conn.execute(
            sa.select(sa.func.count()).where(orm.risk_models.c.id == recs[0].risk_model_id)
        ).scalar_one()
        full = {r.id: stored_request(conn, r.id) for r in recs}
    assert stored == 1  # three chunks, each "a new process", one row
    # the stored request is the one a single-account build gives for the same state
    with UnitOfWork(engine, TENANT) as uow:
        accounts = {a.id: a for a in uow.accounts.get_many([a[0] for a in book.accounts])}
        mids = {s.model_id for a in accounts.values() for s in a.sleeves}
        models = {k: m.model for k, m in uow.models.get_many(mids).items()}
        ids = sorted({i for a in accounts.values() for i in involved_instruments(a, models)[1]})
        instruments, quotes = uow.instruments.get_many(ids), uow.market.latest(ids)
        as_of, closes = uow.market.as_of() or date.today(), uow.market.closes(ids)
    policy = default_policy()
    for r in recs:
        alone = make_request(
            accounts[r.account_id], models, instruments, quotes, closes, as_of, policy
        )
        assert AnalyzeRequest.model_validate(full[r.id]) == alone


def test_full_request_leaves_a_request_without_a_reference_untouched(runtime: Any) -> None:
    engine = runtime.engine
    _, batch_id = _run_batch(engine, 2, chunks=1)
    rec = _batch_recommendations(engine, batch_id)[0]
    r = orm.recommendations
    with engine.begin() as conn:
        whole = stored_request(conn, rec.id)
        conn.execute(sa.update(r).where(r.c.id == rec.id).values(request=whole, risk_model_id=None))
        again = conn.execute(sa.select(full_request()).where(r.c.id == rec.id)).scalar_one()
    assert again == whole and "risk_model" in again


def test_a_batch_recommendation_is_shown_and_approved_into_orders(
    runtime: Any, client: TestClient
) -> None:
    _, batch_id = _run_batch(runtime.engine, 8, chunks=2)
    pending = [r for r in _batch_recommendations(runtime.engine, batch_id)]
    pending = [r for r in pending if r.status == "pending_approval"]
    assert pending, "the synthetic book should need trades somewhere"
    rec = pending[0]
    view = client.get(f"/v1/recommendations/{rec.id}", headers=READ)
    assert view.status_code == 200, view.text
    trades = [t for t in view.json()["analysis"]["trades"] if float(t["quantity"]) > 0]
    assert trades
    approved = client.post(f"/v1/recommendations/{rec.id}/approve", headers=ADMIN)
    assert approved.status_code == 200, approved.text
    orders = approved.json()["orders"]
    assert {o["instrument"] for o in orders} <= {t["instrument"] for t in trades}
    assert len(orders) >= 1


def test_chunk_inputs_reuse_the_covariance_only_for_the_same_closes_and_volatilities() -> None:
    import math

    from rebalancer.analytics.requests import MarketStats
    from rebalancer.domain.model import Instrument

    ids = ["XA", "XB", "XC"]
    instruments = {i: Instrument(i) for i in ids}
    closes = {
        i: [100.0 * math.exp(0.01 * k * (j + 1) % 0.07) for k in range(80)]
        for j, i in enumerate(ids)
    }
    quotes = {i: MarketStats(price=100.0, daily_volatility=0.01) for i in ids}
    day = date(2024, 6, 28)

    def chunk(q: dict[str, MarketStats], read_at: float) -> Any:
        return inputs.ChunkInputs(TENANT, "db-test", day, instruments, q, (read_at, closes))

    first = chunk(quotes, 1.0).get(ids)
    again = chunk(quotes, 1.0).get(ids)  # a later chunk, same closes read
    assert first is not None and again is not None
    assert again[0].risk_model is first[0].risk_model and again[1] == first[1]
    moved = {**quotes, "XB": MarketStats(price=101.0, daily_volatility=0.01)}
    priced = chunk(moved, 1.0).get(ids)  # a new price: new entries, same covariance
    assert priced is not None and priced[0].risk_model is first[0].risk_model
    assert priced[0].instruments[1].price == 101.0
    reread = chunk(quotes, 2.0).get(ids)  # closes read again: estimated again, same content
    assert reread is not None and reread[0].risk_model is not first[0].risk_model
    assert reread[1].id == first[1].id
    calmer = {**quotes, "XC": MarketStats(price=100.0, daily_volatility=0.005)}
    revol = chunk(calmer, 1.0).get(ids)  # another quoted volatility: estimated again
    assert revol is not None and revol[0].risk_model is not first[0].risk_model
    assert chunk(quotes, 1.0).get([*ids, "XD"]) is None  # an unpriced instrument


def test_success_metrics_grade_batch_recommendations_with_their_shared_risk_model(
    runtime: Any,
) -> None:
    from datetime import UTC, datetime, timedelta

    from rebalancer.adapters.repositories.performance import PerformanceRepository
    from rebalancer.analytics import performance as perf
    from rebalancer.optimizer.response_schemas import AnalyzeResponse

    engine = runtime.engine
    since = datetime.now(UTC) - timedelta(minutes=1)
    _, batch_id = _run_batch(engine, 3, chunks=1)
    ours = {r.id for r in _batch_recommendations(engine, batch_id)}
    with engine.connect() as conn:
        recs = PerformanceRepository(conn, TENANT).recommendations(since, limit=1000)
    mine = [r for r in recs if uuid.UUID(str(r.id)) in ours]
    assert len(mine) == 3
    solver = Recommender()
    for r in mine:
        req = AnalyzeRequest.model_validate(r.request)  # whole again: covariance included
        assert req.risk_model.instruments  # type: ignore[union-attr]
        graded = perf.grade(req, AnalyzeResponse.model_validate(r.response), solver)
        assert graded is not None
