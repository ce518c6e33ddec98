"""Risk-model estimation from stored daily closes.

The optimizer's tracking term is priced over a one-year horizon, so the covariance returned here
is of **annual** returns (daily covariance x 252). With enough history the sample covariance of
daily log returns is shrunk toward its diagonal (a fixed-intensity Ledoit-Wolf style target);
instruments with too little history fall back to a diagonal from their quoted daily volatility.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

MIN_OBSERVATIONS = 30
"""Daily returns needed before an instrument's sample covariance is trusted."""

DEFAULT_DAILY_VOL = 0.02
"""Daily volatility assumed when nothing else is known (fraction per day)."""

TRADING_DAYS_PER_YEAR = 252


def estimate_covariance(
    instruments: Sequence[str],
    closes: Mapping[str, Sequence[float]],
    daily_vols: Mapping[str, float | None],
    shrinkage: float = 0.2,
    periods_per_year: int = TRADING_DAYS_PER_YEAR,
) -> NDArray[np.float64]:
    """Covariance of annual returns (n x n, fraction^2 per year), positive semidefinite.

    Parameters
    ----------
    instruments
        Row/column order of the result.
    closes
        Daily closes per instrument, oldest first.
    daily_vols
        Quoted daily volatility per instrument (used where history is short).
    shrinkage
        Weight of the diagonal target in ``(1 - s) * S + s * diag(S)``.
    periods_per_year
        Scale from daily to annual covariance (1 keeps daily units).
    """
    n = len(instruments)
    vols = np.array([daily_vols.get(i) or DEFAULT_DAILY_VOL for i in instruments], dtype=float)
    cov = np.diag(vols**2)
    lengths = [len(closes.get(i, ())) for i in instruments]
    usable = [k for k, m in enumerate(lengths) if m > MIN_OBSERVATIONS]
    if len(usable) >= 2:
        m = min(lengths[k] for k in usable)
        px = np.array([np.asarray(closes[instruments[k]][-m:], dtype=float) for k in usable])
        rets = np.diff(np.log(px), axis=1)
        sample = np.atleast_2d(np.cov(rets))
        target = np.diag(np.diag(sample))
        block = (1.0 - shrinkage) * sample + shrinkage * target
        idx = np.array(usable)
        cov[np.ix_(idx, idx)] = block
    # Symmetrize and clip tiny negative eigenvalues from round-off.
    cov = 0.5 * (cov + cov.T)
    w, v = np.linalg.eigh(cov)
    if w.min() < 0:
        cov = (v * np.clip(w, 1e-12, None)) @ v.T
    assert cov.shape == (n, n)
    return cov * float(periods_per_year)


def realized_daily_vol(closes: Sequence[float], window: int = 60) -> float | None:
    """Standard deviation of the last ``window`` daily log returns, or None if too short."""
    if len(closes) < 3:
        return None
    px = np.asarray(closes[-(window + 1) :], dtype=float)
    return float(np.std(np.diff(np.log(px)), ddof=1))
