"""Process-wide reuse of price-history reads: a year of closes of an instrument set and the
covariance estimated from them.

A drift snapshot needs the covariance of its account's instruments (tracking error), and a
settlement took a snapshot after every fill: reading about 13,000 bars of 50 instruments and
estimating the covariance again was about 100 ms of each settlement's 175 (bench/trading.py).
A batch chunk needs the same closes for its model. Closes change only when bars are added, so an
entry belongs to the database and the instrument set, and it is read again when the caller's
``version`` changes (a batch: the market date; a snapshot: the newest bar time of each
instrument), after :data:`CLOSES_TTL_S` (so a corrected historical bar is seen within that),
or for another database. One entry per instrument set: a newer version replaces the older one.
Memory is bounded by :data:`MAX_CACHED_VALUES` closes and :data:`MAX_CACHED_COV_ENTRIES`
covariance entries (the cache starts over beyond them). What is handed out is shared and must
not be changed: the covariance is flagged read-only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

from rebalancer.analytics.risk_model import estimate_covariance
from rebalancer.service_layer.unit_of_work import UnitOfWork

CLOSES_TTL_S = 60.0
"""How long a process reuses the closes of an instrument set for one ``version`` (s)."""

MAX_CACHED_VALUES = 2_000_000
"""Most closes kept over all instrument sets (about 64 MB as Python floats)."""

MAX_CACHED_COV_ENTRIES = 8_000_000
"""Most covariance entries kept over all instrument sets (64 MB of float64)."""

T = TypeVar("T")
Closes = dict[str, list[float]]
_SetKey = tuple[str, tuple[str, ...]]
"""Database (URL without password) and instrument ids."""


@dataclass(frozen=True, slots=True)
class _Read:
    version: Hashable
    read_at: float
    """``time.monotonic()`` of the read."""
    closes: Closes


@dataclass(frozen=True, slots=True)
class _Estimate:
    version: Hashable
    read_at: float
    """The read of the closes it was estimated from."""
    vols: tuple[float | None, ...]
    cov: NDArray[np.float64]


class _Store(Generic[T]):
    """One entry per instrument set (a new one replaces the old), at most ``limit`` units
    held in all (the store starts over beyond it); thread-safe."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.entries: dict[_SetKey, tuple[T, int]] = {}
        self.held = 0
        """Units held now."""
        self._lock = threading.Lock()

    def get(self, key: _SetKey) -> T | None:
        hit = self.entries.get(key)
        return None if hit is None else hit[0]

    def put(self, key: _SetKey, value: T, size: int) -> None:
        with self._lock:
            old = self.entries.pop(key, None)
            self.held -= old[1] if old is not None else 0
            if self.held + size > self.limit:
                self.entries.clear()
                self.held = 0
            self.entries[key] = (value, size)
            self.held += size

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()
            self.held = 0


_reads: _Store[_Read] = _Store(MAX_CACHED_VALUES)
"""Closes per instrument set; units: closes held."""
_estimates: _Store[_Estimate] = _Store(MAX_CACHED_COV_ENTRIES)
"""Covariances per instrument set; units: covariance entries held."""


def _key(uow: UnitOfWork, ids: Sequence[str]) -> _SetKey:
    return uow.conn.engine.url.render_as_string(hide_password=True), tuple(ids)


def clear() -> None:
    """Forget every read and estimate (tests; a process never needs it)."""
    _reads.clear()
    _estimates.clear()


def cached_closes(uow: UnitOfWork, ids: Sequence[str], version: Hashable) -> tuple[float, Closes]:
    """A year of closes of ``ids`` (oldest first) and when they were read (monotonic seconds).

    Reused while ``version`` is the one read and the read is younger than
    :data:`CLOSES_TTL_S`, on the same database.
    """
    return _closes(_key(uow, ids), uow, version)


def _closes(key: _SetKey, uow: UnitOfWork, version: Hashable) -> tuple[float, Closes]:
    hit = _reads.get(key)
    now = time.monotonic()
    if hit is not None and hit.version == version and now - hit.read_at < CLOSES_TTL_S:
        return hit.read_at, hit.closes
    closes = uow.market.closes(list(key[1]))
    _reads.put(key, _Read(version, now, closes), sum(len(v) for v in closes.values()))
    return now, closes


def cached_covariance(
    uow: UnitOfWork,
    ids: Sequence[str],
    version: Hashable,
    daily_vols: Mapping[str, float | None],
) -> tuple[Closes, NDArray[np.float64]]:
    """The closes of ``ids`` (:func:`cached_closes`) and the annual covariance estimated from
    them and the quoted ``daily_vols`` (fraction per day;
    :func:`~rebalancer.analytics.risk_model.estimate_covariance`), estimated once per read of
    the closes and set of volatilities. The covariance is read-only."""
    key = _key(uow, ids)
    read_at, closes = _closes(key, uow, version)
    vols = tuple(daily_vols.get(i) for i in ids)
    hit = _estimates.get(key)
    if hit is not None and (hit.version, hit.read_at, hit.vols) == (version, read_at, vols):
        return closes, hit.cov
    cov = estimate_covariance(list(ids), closes, daily_vols)
    cov.setflags(write=False)
    _estimates.put(key, _Estimate(version, read_at, vols, cov), cov.size)
    return closes, cov
