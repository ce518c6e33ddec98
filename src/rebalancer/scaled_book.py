"""A synthetic book of any size for load tests and benchmarks (pure, deterministic, vectorised).

:func:`build_scaled_book` makes ``n_instruments`` instruments with a year of simulated daily
closes, one model over all of them and ``n_accounts`` accounts that follow it, each holding
most of the model's instruments in one or two tax lots, drifted off target. Every account
involves the same instruments, so the optimizer compiles one problem shape per lot count and
reuses it for the whole book, as a real "everyone follows model X" batch does.

The book is produced as rows ready for ``COPY`` (see
:mod:`rebalancer.adapters.repositories.bulk`), not as domain objects: 10,000 accounts of 50
instruments are about 750,000 lots.

Units: prices and cost bases are USD per share, quantities shares, cash USD, weights fractions
of NAV, ``daily_volatility`` a fraction per day, ``adv_shares`` shares per day.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np

from rebalancer.domain.model import Instrument, ModelPortfolio

SECTORS = (
    "technology",
    "financials",
    "health_care",
    "energy",
    "industrials",
    "consumer_staples",
    "consumer_discretionary",
    "utilities",
    "materials",
    "real_estate",
)
DEFAULT_AS_OF = date(2024, 6, 28)


@dataclass
class ScaledBook:
    """A synthetic book as COPY-ready rows.

    Attributes
    ----------
    tenant_id
        Owner of the model and the accounts.
    model
        The one model every account follows (version 1).
    instruments
        The model's instruments (equities, lot size 1, T+1).
    bar_times
        Timestamps of the daily bars (UTC market close), oldest first.
    closes
        ``len(bar_times) x len(instruments)`` closes, USD per share.
    daily_volatility, adv_shares, half_spread_bps
        Per-instrument market statistics stored with the newest bar.
    accounts
        ``(id, name, tax_type)`` per account.
    cash
        ``(account_id, settled USD)`` per account.
    sleeves
        ``(sleeve_id, account_id, model_id, share)`` per account.
    lots
        ``(lot_id, account_id, instrument, quantity, cost_basis, acquired)``.
    drift
        Drift snapshot rows (``account_id, ts, tenant_id, nav, total_abs_drift, max_abs_drift,
        tracking_error, details``) at the newest bar.
    """

    tenant_id: str
    model: ModelPortfolio
    instruments: list[Instrument]
    bar_times: list[datetime]
    closes: np.ndarray
    daily_volatility: np.ndarray
    adv_shares: np.ndarray
    half_spread_bps: np.ndarray
    accounts: list[tuple[str, str, str]] = field(default_factory=list)
    cash: list[tuple[str, float]] = field(default_factory=list)
    sleeves: list[tuple[str, str, str, float]] = field(default_factory=list)
    lots: list[tuple[str, str, str, int, float, date]] = field(default_factory=list)
    drift: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def as_of(self) -> date:
        """Date of the newest bar."""
        return self.bar_times[-1].date()

    def price_rows(self) -> list[tuple[str, datetime, float, Any, Any, Any]]:
        """``(instrument, ts, close, adv_shares, daily_volatility, half_spread_bps)`` rows;
        the statistics are set on the newest bar only."""
        rows: list[tuple[str, datetime, float, Any, Any, Any]] = []
        last = len(self.bar_times) - 1
        for j, inst in enumerate(self.instruments):
            for t, ts in enumerate(self.bar_times):
                stats = (
                    (
                        float(self.adv_shares[j]),
                        float(self.daily_volatility[j]),
                        float(self.half_spread_bps[j]),
                    )
                    if t == last
                    else (None, None, None)
                )
                rows.append((inst.id, ts, round(float(self.closes[t, j]), 4), *stats))
        return rows


def _business_days(end: date, n: int) -> list[datetime]:
    days: list[datetime] = []
    d = end
    while len(days) < n:
        if d.weekday() < 5:
            days.append(datetime.combine(d, time(21, 0), tzinfo=UTC))
        d -= timedelta(days=1)
    return days[::-1]


def build_scaled_book(
    n_accounts: int,
    *,
    n_instruments: int = 50,
    prefix: str = "S",
    tenant_id: str = "bench",
    seed: int = 0,
    history_days: int = 260,
    as_of: date = DEFAULT_AS_OF,
) -> ScaledBook:
    """Build a synthetic book deterministically from ``seed``.

    Parameters
    ----------
    n_accounts
        Accounts following the model (ids ``{prefix}-acct-000001``...).
    n_instruments
        Instruments of the model (ids ``{prefix}{j:03d}``), all involved in every account.
    prefix
        Makes instrument, model, account and lot ids unique (instruments are shared by tenants).
    tenant_id
        Owner of the model and the accounts.
    seed
        Seed of every random choice.
    history_days
        Daily bars per instrument (the covariance estimate uses up to 260).
    as_of
        Date of the newest bar.
    """
    rng = np.random.default_rng(seed)
    ids = [f"{prefix}{j:03d}" for j in range(n_instruments)]
    sector = [SECTORS[j % len(SECTORS)] for j in range(n_instruments)]
    instruments = [
        Instrument(i, "equity", s, 1, None, (), 1) for i, s in zip(ids, sector, strict=True)
    ]
    times = _business_days(as_of, history_days)
    vol = rng.uniform(0.008, 0.025, n_instruments)
    market = rng.normal(0.0003, 0.009, history_days)
    beta = rng.uniform(0.5, 1.4, n_instruments)
    rets = market[:, None] * beta[None, :] + rng.normal(0, 1, (history_days, n_instruments)) * vol
    closes = rng.uniform(20.0, 300.0, n_instruments) * np.exp(np.cumsum(rets, axis=0))
    price = closes[-1]
    weights = rng.dirichlet(np.ones(n_instruments) * 4.0) * 0.97
    model = ModelPortfolio(
        f"{prefix}-model",
        1,
        {i: round(float(w), 8) for i, w in zip(ids, weights, strict=True)},
        round(1.0 - float(np.round(weights, 8).sum()), 8),
        f"{prefix} scaled model",
    )
    book = ScaledBook(
        tenant_id,
        model,
        instruments,
        times,
        closes,
        vol,
        rng.uniform(2e5, 5e6, n_instruments),
        rng.uniform(1.0, 8.0, n_instruments),
    )
    target = np.array([model.targets[i] for i in ids])
    tax_types = np.array(["taxable", "tax_deferred", "tax_exempt"])
    drift_ts = times[-1]
    for n in range(1, n_accounts + 1):
        acct = f"{prefix}-acct-{n:06d}"
        nav = float(np.clip(np.exp(rng.normal(np.log(250_000.0), 0.7)), 40_000.0, 3_000_000.0))
        w = target * np.exp(rng.normal(0.0, 0.2, n_instruments))
        w[rng.random(n_instruments) < 0.06] = 0.0  # a few positions not yet bought
        cash_w = float(model.cash_target * rng.uniform(0.2, 3.0))
        w = w / w.sum() * (1.0 - cash_w)
        shares = np.floor(w * nav / price).astype(np.int64)
        invested = float(shares @ price)
        book.accounts.append(
            (acct, f"Scaled account {n}", str(rng.choice(tax_types, p=[0.6, 0.25, 0.15])))
        )
        book.cash.append((acct, round(nav - invested, 2)))
        book.sleeves.append((f"{acct}-core", acct, model.id, 1.0))
        two = rng.random(n_instruments) < 0.5
        split = rng.uniform(0.3, 0.7, n_instruments)
        basis = price * np.exp(rng.normal(0.0, 0.25, (2, n_instruments)))
        age = rng.integers(20, 1500, (2, n_instruments))
        for j in np.flatnonzero(shares > 0):
            q1 = max(1, int(shares[j] * split[j])) if two[j] else int(shares[j])
            parts = [q1, int(shares[j]) - q1] if q1 < shares[j] else [q1]
            for k, q in enumerate(parts):
                book.lots.append(
                    (
                        f"{acct}-{ids[j]}-{k + 1}",
                        acct,
                        ids[j],
                        q,
                        round(float(basis[k, j]), 4),
                        as_of - timedelta(days=int(age[k, j])),
                    )
                )
        held = shares * price / nav
        book.drift.append(_drift_row(acct, tenant_id, drift_ts, nav, held, target, sector, ids))
    return book


def _drift_row(
    account_id: str,
    tenant_id: str,
    ts: datetime,
    nav: float,
    weights: np.ndarray,
    target: np.ndarray,
    sector: list[str],
    ids: list[str],
) -> tuple[Any, ...]:
    """A drift snapshot in the summary format of the monitoring service."""
    active = weights - target
    absd = np.abs(active)
    by_sector: dict[str, float] = {}
    for s, a in zip(sector, active, strict=True):
        by_sector[s] = by_sector.get(s, 0.0) + float(a)
    s_key = max(by_sector, key=lambda k: abs(by_sector[k]))
    s_abs = [abs(v) for v in by_sector.values()]

    def summ(sum_abs: float, max_abs: float, key: str) -> dict[str, Any]:
        return {"sum_abs": sum_abs, "turnover": sum_abs / 2, "max_abs": max_abs, "max_key": key}

    details = {
        "account_id": account_id,
        "as_of": ts.isoformat(),
        "detail": "summary",
        "summaries": {
            "instrument": summ(float(absd.sum()), float(absd.max()), ids[int(absd.argmax())]),
            "sector": summ(float(sum(s_abs)), float(max(s_abs)), s_key),
        },
        "tracking_error": None,
    }
    return (
        account_id,
        ts,
        tenant_id,
        round(nav, 2),
        float(absd.sum()),
        float(absd.max()),
        None,
        details,
    )
