"""A daily market-data feed: real closes where a bundled data set has them, simulated otherwise.

:class:`PriceFeed` replays the daily closes of skfolio's S&P 500 data set (20 US stocks,
1990-01-02 to 2022-12-28, offline) for the tickers it has, and simulates the others by a seeded
geometric Brownian motion. Volumes are simulated (the data set has none). Past the end of the
data set, every ticker is simulated from its last close with its estimated volatility.
Deterministic for a given seed.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

import numpy as np

from rebalancer.contracts import BarV1, MarketDataV1

PRICE_QUANTUM = Decimal("0.0001")
"""Closes are rounded to this many currency units per share."""


@dataclass(frozen=True)
class Sp500Closes:
    """The bundled data set as plain arrays.

    Attributes
    ----------
    dates
        Trading dates, increasing.
    closes
        Ticker -> daily closes in USD per share, aligned with ``dates``.
    """

    dates: tuple[date, ...]
    closes: Mapping[str, np.ndarray]

    def index_on_or_before(self, day: date) -> int:
        """Index of the last trading date <= ``day`` (-1 if ``day`` precedes the data set)."""
        lo, hi = 0, len(self.dates)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.dates[mid] <= day:
                lo = mid + 1
            else:
                hi = mid
        return lo - 1


@functools.cache
def load_sp500_closes() -> Sp500Closes:
    """Load skfolio's S&P 500 daily prices once per process (a few seconds, no network)."""
    from skfolio.datasets import load_sp500_dataset

    frame = load_sp500_dataset()
    dates = tuple(ts.date() for ts in frame.index.to_pydatetime())
    closes = {str(c): frame[c].to_numpy(dtype=float) for c in frame.columns}
    return Sp500Closes(dates, closes)


def to_price(value: float) -> Decimal:
    """A float price as a Decimal rounded to :data:`PRICE_QUANTUM`."""
    return Decimal(repr(value)).quantize(PRICE_QUANTUM)


def _stable_unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from ``parts`` (independent of ``PYTHONHASHSEED``)."""
    return zlib.crc32("|".join(map(str, parts)).encode()) / 2**32


def next_weekday(day: date) -> date:
    """The next Monday-to-Friday date after ``day``."""
    day += timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


@dataclass
class _Series:
    price: float
    returns: deque[float]
    volumes: deque[float]
    dollar_adv: float
    simulated_vol: float
    replayed: bool


class PriceFeed:
    """Steps a set of instruments through daily bars.

    Parameters
    ----------
    instruments
        Instrument ids. Those in the S&P 500 data set are replayed, the others simulated.
    start
        The feed starts at the close of the last trading date <= ``start``;
        :meth:`current_prices` gives those closes and :meth:`next_bars` the next date's bars.
    seed
        Seed of every random draw (simulated prices and volumes).
    initial_prices
        Starting price (USD per share) of simulated instruments; default 100.
    daily_volatility
        Daily return volatility (fraction, 0.01 = 1 %/day) of simulated instruments, one value
        for all or per instrument; default 0.01.
    daily_drift
        Expected daily log return (fraction) of simulated prices; default 0.
    dollar_adv
        Average daily traded value in USD per instrument, for simulated volumes; default a
        seeded draw between 200 million and 5 billion.
    vol_window_days
        Returns used to estimate ``daily_volatility`` and volumes averaged into ``adv_shares``.
    replay
        Replay data-set tickers (default); ``False`` simulates every instrument.
    """

    def __init__(
        self,
        instruments: Iterable[str],
        start: date,
        *,
        seed: int = 0,
        initial_prices: Mapping[str, float] | None = None,
        daily_volatility: float | Mapping[str, float] = 0.01,
        daily_drift: float = 0.0,
        dollar_adv: Mapping[str, float] | None = None,
        vol_window_days: int = 20,
        replay: bool = True,
    ) -> None:
        self._ids = sorted(set(instruments))
        if not self._ids:
            raise ValueError("instruments: a price feed needs at least one instrument")
        if vol_window_days < 2:
            raise ValueError("vol_window_days must be >= 2")
        self._rng = np.random.default_rng(seed)
        self._drift = daily_drift
        self._window = vol_window_days
        self._shocks: dict[str, float] = {}
        initial_prices = initial_prices or {}
        dollar_adv = dollar_adv or {}
        data = load_sp500_closes() if replay else None
        self._data = data
        self._idx = -1
        if data is not None and any(i in data.closes for i in self._ids):
            self._idx = data.index_on_or_before(start)
            if self._idx < 0:
                raise ValueError(f"start: {start} precedes the data set (from {data.dates[0]})")
            self.as_of = data.dates[self._idx]
        else:
            self.as_of = start
        self._series: dict[str, _Series] = {}
        for inst in self._ids:
            vol = (
                daily_volatility
                if isinstance(daily_volatility, float | int)
                else daily_volatility.get(inst, 0.01)
            )
            adv = dollar_adv.get(inst, 2e8 * 25 ** _stable_unit(seed, inst, "adv"))
            replayed = data is not None and inst in data.closes
            if replayed:
                assert data is not None
                lo = max(0, self._idx - self._window)
                hist = data.closes[inst][lo : self._idx + 1]
                price = float(hist[-1])
                rets = deque(np.diff(np.log(hist)).tolist(), maxlen=self._window)
            else:
                price = float(initial_prices.get(inst, 100.0))
                rets = deque(maxlen=self._window)
            if not price > 0:
                raise ValueError(f"initial_prices.{inst}: price must be > 0, got {price}")
            vols = deque([adv / price], maxlen=self._window)
            self._series[inst] = _Series(price, rets, vols, float(adv), float(vol), replayed)

    @property
    def instruments(self) -> list[str]:
        """The instrument ids, sorted."""
        return list(self._ids)

    def is_replayed(self, instrument: str) -> bool:
        """Whether ``instrument``'s closes currently come from the data set."""
        return self._series[instrument].replayed and self._has_next_data_day()

    def current_prices(self) -> dict[str, Decimal]:
        """Closes (USD per share) at :attr:`as_of`."""
        return {i: to_price(s.price) for i, s in self._series.items()}

    def shock(self, returns: Mapping[str, float]) -> None:
        """Add one-off simple returns (0.1 = +10 %) to the next step's closes, e.g. for a demo."""
        for inst, ret in returns.items():
            if inst not in self._series:
                raise KeyError(f"unknown instrument {inst!r}")
            if ret <= -1.0:
                raise ValueError(f"returns.{inst}: a return must be > -1, got {ret}")
            self._shocks[inst] = (1.0 + self._shocks.get(inst, 0.0)) * (1.0 + ret) - 1.0

    def estimated_volatility(self, instrument: str) -> float:
        """Daily volatility (fraction) of the last ``vol_window_days`` log returns.

        Uses the configured volatility until half the window of returns is known.
        """
        s = self._series[instrument]
        if len(s.returns) < max(2, self._window // 2):
            return s.simulated_vol
        return float(np.std(np.asarray(s.returns), ddof=1))

    def _has_next_data_day(self) -> bool:
        return self._data is not None and 0 <= self._idx < len(self._data.dates) - 1

    def next_bars(self) -> list[BarV1]:
        """Advance one trading day and return its bars (sorted by instrument).

        Trading days are the data set's dates while it lasts, then weekdays.
        """
        replay_day = self._has_next_data_day()
        if replay_day:
            assert self._data is not None
            self._idx += 1
            self.as_of = self._data.dates[self._idx]
        else:
            self.as_of = next_weekday(self.as_of)
        shocks, self._shocks = self._shocks, {}
        bars: list[BarV1] = []
        for inst in self._ids:
            s = self._series[inst]
            z, noise = self._rng.standard_normal(2)  # drawn for every ticker: stable streams
            if replay_day and s.replayed:
                assert self._data is not None
                new = float(self._data.closes[inst][self._idx])
            else:
                sigma = s.simulated_vol if not s.replayed else self.estimated_volatility(inst)
                new = s.price * math.exp(self._drift - 0.5 * sigma * sigma + sigma * float(z))
            new *= 1.0 + shocks.get(inst, 0.0)
            s.returns.append(math.log(new / s.price))
            s.price = new
            volume = round(s.dollar_adv / new * math.exp(0.35 * float(noise) - 0.06125))
            s.volumes.append(float(volume))
            vol_est = self.estimated_volatility(inst)
            bars.append(
                BarV1(
                    instrument=inst,
                    close=to_price(new),
                    volume=Decimal(volume),
                    adv_shares=Decimal(round(sum(s.volumes) / len(s.volumes))),
                    daily_volatility=round(vol_est, 6),
                    half_spread_bps=half_spread_bps(vol_est, s.dollar_adv),
                )
            )
        return bars

    def next_market_data(self) -> MarketDataV1:
        """Advance one trading day and return its :class:`MarketDataV1` payload."""
        bars = self.next_bars()
        return MarketDataV1(as_of=self.as_of, bars=bars)


def half_spread_bps(daily_volatility: float, dollar_adv: float) -> float:
    """A simple half-spread model in basis points: wider for volatile, thinly traded names.

    ``0.5 + 100 * daily_volatility * sqrt(1e9 / dollar_adv)`` clipped to [0.5, 50]; e.g. 1.5 %
    daily volatility at 1 billion USD ADV gives 2 bps.
    """
    raw = 0.5 + 100.0 * daily_volatility * math.sqrt(1e9 / max(dollar_adv, 1.0))
    return round(min(50.0, max(0.5, raw)), 2)
