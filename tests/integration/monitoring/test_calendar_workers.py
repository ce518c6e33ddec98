"""Calendar triggers: at most one firing per (account, schedule, period), even with two workers
racing on the same database, across restarts, and suppressed firings retried later."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from monhelpers import QUIET, Book

from rebalancer.service_layer.handlers import monitoring
from rebalancer.service_layer.unit_of_work import UnitOfWork

pytestmark = pytest.mark.integration

SCHEDULES = {
    **QUIET,
    "schedules": [{"id": "daily", "frequency": "daily", "at": "10:00"}],
}
TUESDAY_1030_NY = datetime(2024, 3, 5, 15, 30, tzinfo=UTC)


def _book(engine: Any, n: int, bands: dict[str, Any]) -> tuple[Book, list[str]]:
    bk = Book(engine)
    i = bk.instruments({"A": ("tech", "equity")})
    mid = bk.model({i["A"]: 0.5}, 0.5, bands)
    return bk, [bk.account({mid: 1.0}, {i["A"]: 10}, "100") for _ in range(n)]


def _race(engine: Any, now: datetime, workers: int = 2) -> list[list[dict[str, Any]]]:
    barrier = threading.Barrier(workers)
    results: list[list[dict[str, Any]]] = [[] for _ in range(workers)]
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            with UnitOfWork(engine, "scheduler") as uow:
                barrier.wait(timeout=30)
                results[k] = monitoring.run_calendar(uow, now)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results


def test_two_workers_fire_each_period_once(engine: Any) -> None:
    bk, accounts = _book(engine, 12, SCHEDULES)
    mine = set(accounts)
    for r in range(3):  # three rounds of two racing workers on the same period
        results = _race(engine, TUESDAY_1030_NY)
        fired_now = [f["account_id"] for res in results for f in res if f["account_id"] in mine]
        assert sorted(fired_now) == (sorted(accounts) if r == 0 else [])
    for aid in accounts:
        fired = [e for e in bk.evaluations(aid, "calendar") if e.fired]
        assert [e.period_key for e in fired] == ["daily|D:2024-03-05"], aid
        (reb,) = bk.rebalances(aid)
        assert fired[0].rebalance_id == reb.id and reb.reasons[0].startswith("calendar: daily")
        losers = [e for e in bk.evaluations(aid, "calendar") if not e.fired]
        assert all("already fired by another worker" in e.reason for e in losers)


def test_racing_processes_fire_once(engine: Any, settings: Any) -> None:
    """Two OS processes (separate engines and connection pools) race on the same period."""
    import multiprocessing as mp

    bk, accounts = _book(engine, 6, SCHEDULES)
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [
        ctx.Process(target=_process_worker, args=(settings.database_url, start)) for _ in range(2)
    ]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=180)
        assert p.exitcode == 0
    for aid in accounts:
        assert len([e for e in bk.evaluations(aid, "calendar") if e.fired]) == 1
        assert len(bk.rebalances(aid)) == 1


def _process_worker(url: str, start: Any) -> None:
    from rebalancer.adapters.db import make_engine

    eng = make_engine(url)
    start.wait(60)
    with UnitOfWork(eng, "scheduler") as uow:
        monitoring.run_calendar(uow, TUESDAY_1030_NY)
    eng.dispose()


def test_survives_restart_and_fires_next_period(engine: Any) -> None:
    bk, (aid,) = _book(engine, 1, SCHEDULES)
    with UnitOfWork(engine, "scheduler") as uow:
        first = monitoring.run_calendar(uow, TUESDAY_1030_NY)
    assert [f["account_id"] for f in first if f["account_id"] == aid] == [aid]
    # a new process (new unit of work, nothing in memory) later the same day: nothing
    with UnitOfWork(engine, "scheduler") as uow:
        again = monitoring.run_calendar(uow, datetime(2024, 3, 5, 20, 0, tzinfo=UTC))
    assert all(f["account_id"] != aid for f in again)
    # the next business day fires the next period (joins the open rebalance)
    with UnitOfWork(engine, "scheduler") as uow:
        monitoring.run_calendar(uow, datetime(2024, 3, 6, 15, 0, tzinfo=UTC))
    keys = [e.period_key for e in bk.evaluations(aid, "calendar") if e.fired]
    assert keys == ["daily|D:2024-03-05", "daily|D:2024-03-06"]
    assert len(bk.rebalances(aid)) == 1


def test_market_closed_suppression_is_logged_once_and_fires_later(engine: Any) -> None:
    bk, (aid,) = _book(engine, 1, SCHEDULES)  # calendar requests wait for market hours
    night = datetime(2024, 3, 6, 3, 0, tzinfo=UTC)  # 22:00 New York: D:2024-03-05 is due
    for _ in range(3):
        with UnitOfWork(engine, "scheduler") as uow:
            monitoring.run_calendar(uow, night)
    (ev,) = bk.evaluations(aid, "calendar")
    assert not ev.fired and ev.period_key == "daily|D:2024-03-05"
    assert "market closed" in ev.reason and ev.inputs["gate"]["suppressed_by"] == ["market_closed"]
    assert bk.rebalances(aid) == []
    with UnitOfWork(engine, "scheduler") as uow:  # 10:30 the next day: the new period fires
        monitoring.run_calendar(uow, datetime(2024, 3, 6, 15, 30, tzinfo=UTC))
    fired = [e.period_key for e in bk.evaluations(aid, "calendar") if e.fired]
    assert fired == ["daily|D:2024-03-06"] and len(bk.rebalances(aid)) == 1
