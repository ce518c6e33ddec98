"""Daily market history for a backtest: closes, ADV, volatility and half spread per instrument.

:func:`history_from_feed` steps the service's own :class:`~rebalancer.simulators.market.PriceFeed`
(real closes of skfolio's bundled S&P 500 data set where it has the ticker, a seeded simulation
otherwise), starting ``warmup_days`` trading days before the backtest start so that the
covariance estimate has history on the first decision date, exactly as the service's stored
price table would.

Units: closes in currency per share, ``adv_shares`` shares per day, ``daily_volatility`` a
fraction per day, ``half_spread_bps`` basis points.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

import numpy as np
from numpy.typing import NDArray

from rebalancer.analytics.requests import MarketStats
from rebalancer.simulators.market import PriceFeed, load_sp500_closes

Arr = NDArray[np.float64]

COVARIANCE_WINDOW = 260
"""Closes handed to the covariance estimate (the service's ``MarketDataRepository.closes``)."""


@dataclass(frozen=True)
class MarketHistory:
    """Aligned daily arrays, shape (T days, n instruments), columns in ``ids`` order.

    Attributes
    ----------
    dates
        Trading dates, increasing (warm-up included).
    ids
        Instrument ids (columns).
    close, adv_shares, daily_volatility, half_spread_bps
        Market data per day and instrument.
    replayed
        Ids whose closes are real data (the others are simulated).
    """

    dates: tuple[date, ...]
    ids: tuple[str, ...]
    close: Arr
    adv_shares: Arr
    daily_volatility: Arr
    half_spread_bps: Arr
    replayed: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        shape = (len(self.dates), len(self.ids))
        for name in ("close", "adv_shares", "daily_volatility", "half_spread_bps"):
            if getattr(self, name).shape != shape:
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, not {shape}")
        if not (self.close > 0).all():
            raise ValueError("close: every price must be > 0")

    def column(self, instrument: str) -> int:
        """Column index of ``instrument``."""
        return self.ids.index(instrument)

    def index_on_or_after(self, day: date) -> int:
        """Index of the first trading date >= ``day`` (``len(dates)`` if none)."""
        return int(np.searchsorted(np.array(self.dates, dtype="datetime64[D]"), np.datetime64(day)))

    def prices(self, t: int) -> dict[str, float]:
        """Closes of day ``t`` (currency per share)."""
        return dict(zip(self.ids, self.close[t].tolist(), strict=True))

    def quotes(self, t: int, ids: Sequence[str] | None = None) -> dict[str, MarketStats]:
        """Market data of day ``t`` as the service's latest quotes."""
        out = {}
        for i in ids if ids is not None else self.ids:
            k = self.column(i)
            out[i] = MarketStats(
                float(self.close[t, k]),
                float(self.adv_shares[t, k]),
                float(self.daily_volatility[t, k]),
                float(self.half_spread_bps[t, k]),
            )
        return out

    def closes(
        self, t: int, ids: Sequence[str], window: int = COVARIANCE_WINDOW
    ) -> dict[str, list[float]]:
        """The last ``window`` closes up to and including day ``t``, oldest first."""
        lo = max(0, t + 1 - window)
        return {i: self.close[lo : t + 1, self.column(i)].tolist() for i in ids}


def history_from_arrays(
    dates: Sequence[date],
    close: Mapping[str, Sequence[float]],
    *,
    adv_shares: float = 1e7,
    daily_volatility: float = 0.01,
    half_spread_bps: float = 5.0,
) -> MarketHistory:
    """A history from given closes with constant market statistics (tests, what-ifs)."""
    ids = tuple(sorted(close))
    px = np.array([close[i] for i in ids], dtype=float).T.reshape(len(dates), len(ids))
    full = np.ones_like(px)
    return MarketHistory(
        tuple(dates),
        ids,
        px,
        full * adv_shares,
        full * daily_volatility,
        full * half_spread_bps,
    )


def history_from_feed(
    instruments: Sequence[str],
    start: date,
    end: date,
    *,
    warmup_days: int = COVARIANCE_WINDOW,
    seed: int = 3,
    simulated: Mapping[str, tuple[float, float]] | None = None,
) -> MarketHistory:
    """Step a :class:`PriceFeed` from ``warmup_days`` trading days before ``start`` to ``end``.

    Parameters
    ----------
    instruments
        Instrument ids; tickers of the S&P 500 data set replay real closes.
    start, end
        Backtest period (``end`` inclusive); must lie inside the data set (1990 to 2022-12-28)
        for real closes to be replayed.
    warmup_days
        Trading days of history before ``start``.
    seed
        Seed of the simulated prices and volumes.
    simulated
        Simulated instruments: id -> (starting price USD/share, daily volatility).
    """
    data = load_sp500_closes()
    k0 = data.index_on_or_before(start)
    if k0 < 0 or end <= start:
        raise ValueError(f"start {start} must lie in the data set and before end {end}")
    first = data.dates[max(0, k0 - warmup_days)]
    sim = simulated or {}
    feed = PriceFeed(
        instruments,
        first,
        seed=seed,
        initial_prices={k: v[0] for k, v in sim.items()},
        daily_volatility={k: v[1] for k, v in sim.items()},
    )
    ids = tuple(feed.instruments)
    replayed = frozenset(i for i in ids if i in data.closes)
    dates: list[date] = [feed.as_of]
    start_px = feed.current_prices()
    rows = [[float(start_px[i]) for i in ids]]
    adv: list[list[float]] = [[np.nan] * len(ids)]
    vol: list[list[float]] = [[np.nan] * len(ids)]
    spr: list[list[float]] = [[np.nan] * len(ids)]
    while feed.as_of < end:
        bars = feed.next_bars()
        if feed.as_of > end:
            break
        dates.append(feed.as_of)
        rows.append([float(b.close) for b in bars])
        adv.append([float(b.adv_shares or 0.0) for b in bars])
        vol.append([float(b.daily_volatility or 0.0) for b in bars])
        spr.append([float(b.half_spread_bps or 0.0) for b in bars])
    a, v, s = (np.array(x, dtype=float) for x in (adv, vol, spr))
    for arr in (a, v, s):  # the first day has no bar: carry the next day's statistics back
        arr[0] = arr[1] if len(arr) > 1 else 0.0
    return MarketHistory(tuple(dates), ids, np.array(rows, dtype=float), a, v, s, replayed)
