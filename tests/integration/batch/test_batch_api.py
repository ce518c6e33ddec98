"""Batch rebalance through the HTTP API, computed by an in-process batch consumer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from batchhelpers import (
    load_book,
    recommendations_per_account,
    relay_running,
    wait_finished,
)
from fastapi.testclient import TestClient

ADMIN = {"X-API-Key": "test-admin-key"}
READ = {"X-API-Key": "test-read-key"}


@pytest.fixture
def batch_consumer(runtime: Any) -> Iterator[None]:
    from rebalancer.entrypoints.batch_worker import BatchConsumerLoop, BatchSolver

    stop = threading.Event()
    # the API is under test, not the solver (test_batch_solver covers the fast default): a JAX
    # compile on two busy cores could outlast the wait for the batch
    loop = BatchConsumerLoop(runtime, chunk_size=5, name="test-batch", solver=BatchSolver.CLARABEL)
    t = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    t.start()
    yield
    stop.set()
    t.join(30)


def test_model_rebalance_fans_out_and_every_account_gets_one_recommendation(
    runtime: Any, client: TestClient, batch_consumer: None
) -> None:
    book, _ = load_book(runtime.engine, 12)
    path = f"/v1/models/{book.model.id}/rebalance"
    headers = {**ADMIN, "Idempotency-Key": f"batch-{book.model.id}"}
    with relay_running(runtime):
        first = client.post(path, json={"reason": "model_change"}, headers=headers)
        assert first.status_code == 202, first.text
        body = first.json()
        again = client.post(path, json={"reason": "model_change"}, headers=headers)
        assert again.status_code == 202 and again.json() == body  # same batch, nothing new
        assert (body["total"], body["queued"], body["skipped"]) == (12, 12, 0)
        done = wait_finished(runtime.engine, "tenant-a", body["batch_id"])
    view = client.get(f"/v1/batches/{body['batch_id']}", headers=READ)
    assert view.status_code == 200, view.text
    out = view.json()
    assert out["status"] == "finished" and out["finished_at"] is not None
    assert out["done"] == 12 and sum(out["counts"].values()) == 12
    assert set(out["counts"]) <= {"pending_approval", "no_trade", "failed"}
    assert out["counts"].get("failed", 0) == 0, done
    assert out["accounts_per_s"] > 0
    per_account = recommendations_per_account(runtime.engine, body["batch_id"])
    assert per_account == {a[0]: 1 for a in book.accounts}


def test_second_batch_skips_accounts_with_a_pending_recommendation(
    runtime: Any, client: TestClient, batch_consumer: None
) -> None:
    book, _ = load_book(runtime.engine, 4)
    path = f"/v1/models/{book.model.id}/rebalance"
    with relay_running(runtime):
        first = client.post(path, headers=ADMIN).json()
        wait_finished(runtime.engine, "tenant-a", first["batch_id"])
        pending = client.get(f"/v1/batches/{first['batch_id']}", headers=READ).json()
        second = client.post(path, headers=ADMIN)
        assert second.status_code == 202, second.text
        body = second.json()
        wait_finished(runtime.engine, "tenant-a", body["batch_id"])
        waiting = _pending_approval(runtime.engine, [a[0] for a in book.accounts])
        # superseding: the recommendations awaiting approval are rejected and recomputed
        third = client.post(path, json={"supersede_pending": True}, headers=ADMIN)
        assert third.status_code == 202, third.text
        body3 = third.json()
        wait_finished(runtime.engine, "tenant-a", body3["batch_id"])
    assert body["skipped"] == pending["counts"].get("pending_approval", 0)
    assert body["queued"] + body["skipped"] == 4 and body["superseded"] == 0
    assert waiting > 0  # the book's drift leaves something to approve
    assert (body3["queued"], body3["skipped"], body3["superseded"]) == (4, 0, waiting)
    assert _pending_approval(runtime.engine, [a[0] for a in book.accounts]) <= 4
    bad = client.post(path, json={"supersede_pending": "maybe"}, headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["fields"] == ["body.supersede_pending"]


def _pending_approval(engine: Any, account_ids: list[str]) -> int:
    """Rebalances of the accounts awaiting approval."""
    import sqlalchemy as sa

    from rebalancer.adapters import orm

    r = orm.rebalances
    q = sa.select(sa.func.count()).where(
        r.c.account_id.in_(account_ids), r.c.status == "pending_approval"
    )
    with engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


def test_batch_errors_name_the_problem(client: TestClient) -> None:
    missing = client.post("/v1/models/no-such-model/rebalance", headers=ADMIN)
    assert missing.status_code == 404 and "no-such-model" in missing.json()["detail"]
    forbidden = client.post("/v1/models/no-such-model/rebalance", headers=READ)
    assert forbidden.status_code == 403
    unknown = client.get("/v1/batches/00000000-0000-0000-0000-000000000000", headers=READ)
    assert unknown.status_code == 404
    other_tenant = client.get(
        "/v1/batches/00000000-0000-0000-0000-000000000000",
        headers={"X-API-Key": "test-admin-key-b"},
    )
    assert other_tenant.status_code == 404


def test_cancel_a_batch_through_the_api(runtime: Any, client: TestClient) -> None:
    """No worker runs here: cancelling right after the fan-out cancels every account."""
    book, _ = load_book(runtime.engine, 3)
    started = client.post(f"/v1/models/{book.model.id}/rebalance", headers=ADMIN).json()
    url = f"/v1/batches/{started['batch_id']}/cancel"
    assert client.post(url, headers=READ).status_code == 403  # the trade scope starts and stops
    other = client.post(url, headers={"X-API-Key": "test-admin-key-b"})
    assert other.status_code == 404 and other.json()["fields"] == ["batch_id"]
    key = {"Idempotency-Key": f"cancel-{started['batch_id']}"}
    first = client.post(url, json={"reject_pending": True}, headers={**ADMIN, **key})
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["cancelled"], body["rejected"], body["status"]) == (3, 0, "cancelled")
    assert body["counts"] == {"cancelled": 3} and body["done"] == 3
    assert client.post(url, json={"reject_pending": True}, headers={**ADMIN, **key}).json() == body
    again = client.post(url, headers=ADMIN).json()  # no key: nothing more to do
    assert (again["cancelled"], again["rejected"], again["status"]) == (0, 0, "cancelled")
    bad = client.post(url, json={"reject_pending": True, "extra": 1}, headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["fields"] == ["body.extra"]


def test_approve_a_batch_through_the_api(
    runtime: Any, client: TestClient, batch_consumer: None
) -> None:
    book, _ = load_book(runtime.engine, 4)
    with relay_running(runtime):
        started = client.post(f"/v1/models/{book.model.id}/rebalance", headers=ADMIN).json()
        wait_finished(runtime.engine, "tenant-a", started["batch_id"])
    url = f"/v1/batches/{started['batch_id']}/approve"
    waiting = _pending_approval(runtime.engine, [a[0] for a in book.accounts])
    assert waiting >= 2  # the book's drift leaves recommendations to approve
    assert client.post(url, headers=READ).status_code == 403  # the approve scope is needed
    bad = client.post(url, json={"chunk_size": 0}, headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["fields"] == ["body.chunk_size"]
    unknown = client.post("/v1/batches/00000000-0000-0000-0000-000000000000/approve", headers=ADMIN)
    assert unknown.status_code == 404 and unknown.json()["fields"] == ["batch_id"]
    key = {"Idempotency-Key": f"approve-{started['batch_id']}"}
    one = client.post(url, json={"max_accounts": 1}, headers={**ADMIN, **key})
    assert one.status_code == 200, one.text
    body = one.json()
    assert (body["approved"], body["remaining"]) == (1, waiting - 1) and body["orders"] > 0
    assert client.post(url, json={"max_accounts": 1}, headers={**ADMIN, **key}).json() == body
    rest = client.post(url, json={"limit_offset_bps": 5, "time_in_force": "day"}, headers=ADMIN)
    assert rest.status_code == 200, rest.text
    assert (rest.json()["approved"], rest.json()["remaining"]) == (waiting - 1, 0)
    assert "pending_approval" not in rest.json()["counts"]
