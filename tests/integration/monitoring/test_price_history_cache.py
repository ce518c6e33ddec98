"""The process-wide reuse of price history (``service_layer.price_history``) on the real
database: a read is reused for the same database, instrument set and version, read again when
any of them changes or the entry expires; a drift snapshot taken after a new bar uses it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from monhelpers import Book

from rebalancer.adapters import migrate, orm
from rebalancer.analytics.risk_model import estimate_covariance
from rebalancer.service_layer import price_history
from rebalancer.service_layer.handlers import monitoring
from rebalancer.service_layer.unit_of_work import UnitOfWork

pytestmark = pytest.mark.integration

START = datetime(2024, 1, 2, 21, tzinfo=UTC)


def _bars(engine: Any, tenant: str, ids: list[str], days: range, seed: int = 0) -> None:
    """Daily closes of ``ids`` on ``days`` (offsets from START), a random walk per instrument."""
    rng = np.random.default_rng(seed)
    with UnitOfWork(engine, tenant) as uow:
        for d in days:
            uow.market.add_bars(
                START + timedelta(days=d),
                [
                    {
                        "instrument": i,
                        "close": round(100 * float(np.exp(rng.normal(0, 0.02))), 4),
                        "daily_volatility": 0.02,
                    }
                    for i in ids
                ],
            )
        uow.commit()


def test_a_read_is_reused_per_database_instruments_and_version(engine: Any, scratch: Any) -> None:
    book = Book(engine)
    ids = sorted(book.instruments({"A": ("tech", "equity"), "B": ("energy", "equity")}).values())
    _bars(engine, book.tenant, ids, range(40))
    with book.uow() as uow:
        read_at, first = price_history.cached_closes(uow, ids, "v1")
        assert [len(first[i]) for i in ids] == [40, 40]
        assert price_history.cached_closes(uow, ids, "v1") == (read_at, first)  # reused
    _bars(engine, book.tenant, ids, range(40, 41), seed=1)
    with book.uow() as uow:
        _, same = price_history.cached_closes(uow, ids, "v1")
        assert same is first  # same version within the TTL: the caller said nothing changed
        _, fresh = price_history.cached_closes(uow, ids, "v2")
        assert [len(fresh[i]) for i in ids] == [41, 41]
        _, alone = price_history.cached_closes(uow, ids[:1], "v2")  # another instrument set
        assert list(alone) == ids[:1]

    # the same ids and version on another database are read there (nothing there)
    migrate.upgrade(scratch)
    with UnitOfWork(scratch, book.tenant) as uow:
        _, other = price_history.cached_closes(uow, ids, "v2")
    assert other == {i: [] for i in ids}


def test_one_entry_per_instrument_set_and_memory_is_bounded(engine: Any, monkeypatch: Any) -> None:
    """A newer version replaces its instrument set's entry; beyond the size bound the cache
    starts over (it never holds more than the bound)."""
    book = Book(engine)
    ids = sorted(book.instruments({"A": ("tech", "equity"), "B": ("energy", "equity")}).values())
    _bars(engine, book.tenant, ids, range(10))
    price_history.clear()
    with book.uow() as uow:
        price_history.cached_closes(uow, ids, "v1")
        price_history.cached_closes(uow, ids, "v2")
        assert len(price_history._reads.entries) == 1 and price_history._reads.held == 20
        monkeypatch.setattr(price_history._reads, "limit", 25)
        price_history.cached_closes(uow, ids[:1], "v2")  # 20 + 10 > 25: starts over
        assert list(price_history._reads.entries) == [price_history._key(uow, ids[:1])]
        assert price_history._reads.held == 10


def test_an_entry_expires_after_the_ttl(engine: Any, monkeypatch: Any) -> None:
    book = Book(engine)
    ids = sorted(book.instruments({"A": ("tech", "equity")}).values())
    _bars(engine, book.tenant, ids, range(3))
    with book.uow() as uow:
        _, first = price_history.cached_closes(uow, ids, "v")
    monkeypatch.setattr(price_history, "CLOSES_TTL_S", 0.0)
    with book.uow() as uow:
        _, again = price_history.cached_closes(uow, ids, "v")
    assert again == first and again is not first


def test_the_covariance_is_the_estimate_and_read_only(engine: Any) -> None:
    book = Book(engine)
    ids = sorted(book.instruments({"A": ("tech", "equity"), "B": ("energy", "equity")}).values())
    _bars(engine, book.tenant, ids, range(40))
    vols = {ids[0]: 0.01, ids[1]: None}
    with book.uow() as uow:
        closes, cov = price_history.cached_covariance(uow, ids, "v", vols)
        _, again = price_history.cached_covariance(uow, ids, "v", vols)
        _, other_vols = price_history.cached_covariance(uow, ids, "v", {ids[0]: 0.03})
    np.testing.assert_array_equal(cov, estimate_covariance(ids, closes, vols))
    assert again is cov
    assert other_vols is not cov
    assert not cov.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        cov[0, 0] = 1.0


def test_a_snapshot_after_a_new_bar_uses_the_new_closes(engine: Any) -> None:
    """Tracking error of a snapshot taken after a new bar equals the one computed with the
    caches emptied: the newest bar time of each instrument is the version (not the market
    date: the new bar is on the same date)."""
    book = Book(engine)
    ids = book.instruments({"A": ("tech", "equity"), "B": ("energy", "equity")})
    model = book.model({ids["A"]: 0.5, ids["B"]: 0.5}, 0.0)
    account = book.account({model: 1.0}, {ids["A"]: 90, ids["B"]: 10}, "0")
    _bars(engine, book.tenant, sorted(ids.values()), range(40))

    def tracking_error(at: datetime) -> float:
        with book.uow() as uow:
            monitoring.refresh_account(uow, account)
            uow.commit()
        with engine.connect() as conn:
            te = conn.execute(
                sa.select(orm.drift_snapshots.c.tracking_error).where(
                    orm.drift_snapshots.c.account_id == account, orm.drift_snapshots.c.ts == at
                )
            ).scalar_one()
        return float(te)

    before = tracking_error(START + timedelta(days=39))
    # a large move of A an hour later, the same market date, changes the covariance
    later = START + timedelta(days=39, hours=1)
    with UnitOfWork(engine, book.tenant) as uow:
        uow.market.add_bars(
            later,
            [
                {"instrument": ids["A"], "close": 160.0, "daily_volatility": 0.02},
                {"instrument": ids["B"], "close": 100.0, "daily_volatility": 0.02},
            ],
        )
        uow.commit()
    after = tracking_error(later)
    price_history.clear()
    uncached = tracking_error(later)
    assert after == uncached
    assert after != before
