"""Process-wide reuse of price-history reads: a year of closes of an instrument set and the
covariance estimated from them.

A drift snapshot needs the covariance of its account's instruments (tracking error), and a
settlement takes a snapshot after every fill: reading about 13,000 bars of 50 instruments and
estimating the covariance again was about 100 ms of each settlement's 175 (bench/trading.py).
A batch chunk needs the same closes for its model. Closes change only when bars are added, so an
entry is keyed by the database, the instrument set and a ``version`` the caller knows to change
with new bars (a batch: the market date; a snapshot: the newest bar time of each instrument),
and it expires after :data:`CLOSES_TTL_S`, so a corrected historical bar is seen within that.
The arrays handed out are shared: read-only (the covariance is flagged so).
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from rebalancer.analytics.risk_model import estimate_covariance
from rebalancer.service_layer.unit_of_work import UnitOfWork

CLOSES_TTL_S = 60.0
"""How long a process reuses the closes of an instrument set for one ``version`` (s)."""

_MAX_ENTRIES = 64
"""Entries kept per cache before it starts over (instrument sets x versions in use)."""

Closes = dict[str, list[float]]
_ClosesKey = tuple[str, tuple[str, ...], Hashable]
_closes: dict[_ClosesKey, tuple[float, Closes]] = {}
_covariances: dict[tuple[_ClosesKey, float, tuple[float | None, ...]], NDArray[np.float64]] = {}


def _database(uow: UnitOfWork) -> str:
    return uow.conn.engine.url.render_as_string(hide_password=True)


def cached_closes(uow: UnitOfWork, ids: Sequence[str], version: Hashable) -> tuple[float, Closes]:
    """A year of closes of ``ids`` (oldest first) and when they were read (monotonic seconds).

    Read again when ``version`` changes, after :data:`CLOSES_TTL_S`, or for another database.
    """
    key = (_database(uow), tuple(ids), version)
    hit = _closes.get(key)
    now = time.monotonic()
    if hit is not None and now - hit[0] < CLOSES_TTL_S:
        return hit
    closes = uow.market.closes(list(ids))
    if len(_closes) >= _MAX_ENTRIES:
        _closes.clear()
    _closes[key] = (now, closes)
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
    read_at, closes = cached_closes(uow, ids, version)
    vols = tuple(daily_vols.get(i) for i in ids)
    key = ((_database(uow), tuple(ids), version), read_at, vols)
    cov = _covariances.get(key)
    if cov is None:
        cov = estimate_covariance(list(ids), closes, daily_vols)
        cov.setflags(write=False)
        if len(_covariances) >= _MAX_ENTRIES:
            _covariances.clear()
        _covariances[key] = cov
    return closes, cov
