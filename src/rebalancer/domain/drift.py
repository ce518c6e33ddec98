"""Drift of current weights from target weights, at every level, for one account or a whole book.

This module holds the per-account report and trends; risk models live in
:mod:`rebalancer.domain.risk_models`, the vectorised book in :mod:`rebalancer.domain.drift_book`
(their names are re-exported here).

Units
-----
All weights and drifts are ``float`` fractions of account NAV (0.01 = 1 % of NAV). Relative drift
is a fraction of the target weight (0.5 = 50 % over target). Tracking-error drift is in the unit
of the risk model's covariance (annualised return volatility when the covariance is annualised),
i.e. ``sqrt(a' Sigma a)`` with ``a = w - w*``. Time in trend functions is in days.

Definitions (per level, with ``a_k`` the active weight of group ``k`` = the sum of the active
weights of its instruments, cash included under the ``"cash"`` sector and asset class):

- absolute drift ``a_k = w_k - w*_k``;
- relative drift ``a_k / w*_k`` where ``w*_k > 0`` (``None`` / NaN otherwise);
- sum of absolute deviations ``sum_k |a_k|`` and its half, the one-way turnover to target;
- max absolute drift ``max_k |a_k|``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np

from rebalancer.domain.arrays import FloatArray, IntArray
from rebalancer.domain.drift_book import BookDrift, LevelArrays, book_drift, group_matrix
from rebalancer.domain.errors import InvalidInput, UnknownInstrument
from rebalancer.domain.model import CASH, WEIGHT_TOLERANCE, Instrument, Sleeve, validate_targets
from rebalancer.domain.risk_models import (
    CovarianceModel,
    FactorModel,
    RiskModel,
    risk_vector,
    tracking_error_rows,
)

__all__ = [
    "CASH_GROUP",
    "LEVELS",
    "BookDrift",
    "CovarianceModel",
    "DriftReport",
    "DriftTrend",
    "FactorModel",
    "FloatArray",
    "IntArray",
    "LevelArrays",
    "LevelDrift",
    "LevelSummary",
    "RiskModel",
    "SleeveHoldings",
    "account_drift",
    "book_drift",
    "days_to_breach",
    "drift_trend",
    "group_matrix",
    "risk_vector",
    "tracking_error_rows",
    "trend_slopes",
]

LEVELS = ("instrument", "sector", "asset_class", "sleeve")
"""Levels reported per key; the account level is the :class:`LevelSummary` of instruments."""

CASH_GROUP = "cash"
"""Sector and asset class that :data:`~rebalancer.domain.model.CASH` belongs to."""


# --------------------------------------------------------------------------- one account
@dataclass(frozen=True, slots=True)
class LevelDrift:
    """Drift of one key (instrument, sector, asset class or sleeve) as fractions of NAV."""

    weight: float
    target: float
    absolute: float
    relative: float | None
    """``absolute / target`` when ``target > 0``, else ``None``."""

    def to_dict(self) -> dict[str, float | None]:
        """JSON-ready mapping."""
        return {
            "weight": self.weight,
            "target": self.target,
            "absolute": self.absolute,
            "relative": self.relative,
        }


@dataclass(frozen=True, slots=True)
class LevelSummary:
    """Summary of one level: ``sum_abs`` = sum of |drift|, ``turnover`` = half of it (one-way)."""

    sum_abs: float
    turnover: float
    max_abs: float
    max_key: str | None

    def to_dict(self) -> dict[str, float | str | None]:
        """JSON-ready mapping."""
        return {
            "sum_abs": self.sum_abs,
            "turnover": self.turnover,
            "max_abs": self.max_abs,
            "max_key": self.max_key,
        }


@dataclass(frozen=True, slots=True)
class SleeveHoldings:
    """What one sleeve holds and should hold, as fractions of the **account** NAV.

    Attributes
    ----------
    sleeve
        The sleeve; its ``share`` is its target fraction of account NAV.
    model_weights
        The sleeve's model weights (fractions of the sleeve, cash included, summing to 1).
    current
        Instrument -> current weight attributed to this sleeve, as fractions of account NAV.
    """

    sleeve: Sleeve
    model_weights: Mapping[str, float]
    current: Mapping[str, float]


@dataclass(frozen=True)
class DriftReport:
    """Drift of one account at every level.

    Attributes
    ----------
    account_id, as_of
        Identify the snapshot (``as_of`` is passed by the caller, never read from a clock).
    levels
        ``level -> key -> LevelDrift`` for levels ``instrument``, ``sector``, ``asset_class`` and
        (if sleeves were given) ``sleeve``, where a sleeve's weight is its current share of NAV.
    summaries
        ``level -> LevelSummary``; ``summaries["instrument"]`` is the account-level drift.
    sleeve_internal
        ``sleeve id -> LevelSummary`` of the sleeve's holdings against ``share * model weights``.
    tracking_error
        ``sqrt(a' Sigma a)`` over instruments when a risk model was given, else ``None``.
    """

    account_id: str
    as_of: date | datetime | None
    levels: Mapping[str, Mapping[str, LevelDrift]]
    summaries: Mapping[str, LevelSummary]
    sleeve_internal: Mapping[str, LevelSummary] = field(default_factory=dict)
    tracking_error: float | None = None

    @property
    def account(self) -> LevelSummary:
        """Account-level drift: the summary over instruments (cash included)."""
        return self.summaries["instrument"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (dates in ISO format)."""
        return {
            "account_id": self.account_id,
            "as_of": self.as_of.isoformat() if self.as_of is not None else None,
            "levels": {
                lvl: {k: d.to_dict() for k, d in sorted(keys.items())}
                for lvl, keys in self.levels.items()
            },
            "summaries": {lvl: s.to_dict() for lvl, s in self.summaries.items()},
            "sleeve_internal": {k: s.to_dict() for k, s in self.sleeve_internal.items()},
            "tracking_error": self.tracking_error,
        }


def _check_weights(weights: Mapping[str, float], field_name: str) -> None:
    for key, w in weights.items():
        if not math.isfinite(w):
            raise InvalidInput(f"weight of {key} is {w}", [f"{field_name}.{key}"])
    total = math.fsum(weights.values())
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise InvalidInput(
            f"current weights sum to {total:.8f}; they must sum to 1 (cash included)",
            [field_name],
        )


def _level_drifts(
    w: Mapping[str, float], t: Mapping[str, float]
) -> tuple[dict[str, LevelDrift], LevelSummary]:
    out: dict[str, LevelDrift] = {}
    for key in sorted(set(w) | set(t)):
        wk, tk = w.get(key, 0.0), t.get(key, 0.0)
        a = wk - tk
        out[key] = LevelDrift(wk, tk, a, a / tk if tk > 0 else None)
    return out, _summary({k: d.absolute for k, d in out.items()})


def _summary(active: Mapping[str, float]) -> LevelSummary:
    if not active:
        return LevelSummary(0.0, 0.0, 0.0, None)
    sum_abs = math.fsum(abs(a) for a in active.values())
    max_key = max(sorted(active), key=lambda k: abs(active[k]))
    return LevelSummary(sum_abs, sum_abs / 2.0, abs(active[max_key]), max_key)


def _group(weights: Mapping[str, float], label: Mapping[str, str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, w in weights.items():
        out[label[key]] = out.get(label[key], 0.0) + w
    return out


def account_drift(
    account_id: str,
    weights: Mapping[str, float],
    targets: Mapping[str, float],
    instruments: Mapping[str, Instrument],
    *,
    sleeves: Sequence[SleeveHoldings] = (),
    risk_model: RiskModel | None = None,
    as_of: date | datetime | None = None,
) -> DriftReport:
    """Drift of one account at the instrument, sector, asset-class, sleeve and account levels.

    Parameters
    ----------
    account_id
        Account id (copied to the report).
    weights
        Current weights (fractions of NAV) per instrument and :data:`CASH`, summing to 1.
    targets
        Target weights per instrument and :data:`CASH`, summing to 1.
    instruments
        Instrument id -> :class:`Instrument` (for sector and asset class) for every non-cash key.
    sleeves
        Optional per-sleeve holdings; adds the ``sleeve`` level and ``sleeve_internal``.
    risk_model
        Optional :class:`CovarianceModel` or :class:`FactorModel`; adds ``tracking_error``.
    as_of
        Time of the snapshot, copied to the report.

    Raises
    ------
    InvalidInput
        Weights not finite or not summing to 1 (``fields`` names ``weights`` or ``targets``).
    UnknownInstrument
        A key is neither cash nor in ``instruments`` (or missing from the risk model).
    """
    _check_weights(weights, "weights")
    validate_targets(targets)
    keys = sorted(set(weights) | set(targets))
    for key in keys:
        if key != CASH and key not in instruments:
            raise UnknownInstrument(f"instrument {key} is unknown", [f"weights.{key}"])

    def label(attr: str) -> dict[str, str]:
        return {k: CASH_GROUP if k == CASH else getattr(instruments[k], attr) for k in keys}

    levels: dict[str, dict[str, LevelDrift]] = {}
    summaries: dict[str, LevelSummary] = {}
    levels["instrument"], summaries["instrument"] = _level_drifts(weights, targets)
    for lvl in ("sector", "asset_class"):
        lab = label(lvl)
        levels[lvl], summaries[lvl] = _level_drifts(_group(weights, lab), _group(targets, lab))
    internal: dict[str, LevelSummary] = {}
    if sleeves:
        cur = {s.sleeve.id: math.fsum(s.current.values()) for s in sleeves}
        tgt = {s.sleeve.id: s.sleeve.share for s in sleeves}
        levels["sleeve"], summaries["sleeve"] = _level_drifts(cur, tgt)
        for s in sleeves:
            want = {k: s.sleeve.share * v for k, v in s.model_weights.items()}
            active = {
                k: s.current.get(k, 0.0) - want.get(k, 0.0) for k in set(want) | set(s.current)
            }
            internal[s.sleeve.id] = _summary(active)
    te = None
    if risk_model is not None:
        a = np.array([[weights.get(k, 0.0) - targets.get(k, 0.0) for k in keys]])
        te = float(tracking_error_rows(a, keys, risk_model)[0])
    return DriftReport(account_id, as_of, levels, summaries, internal, te)


# --------------------------------------------------------------------------- trends
@dataclass(frozen=True, slots=True)
class DriftTrend:
    """Trend of one drift metric over snapshots.

    Attributes
    ----------
    last
        Most recent value.
    slope_per_day
        Least-squares slope, metric units per day (0 with fewer than two distinct times).
    ewma
        Exponentially weighted mean with the given half-life (days), irregular spacing aware.
    days_to_breach
        Days until ``|value|`` reaches the band along the fitted slope from ``last``; 0 if
        already at or beyond it; ``None`` if never (flat slope) or no band was given.
    """

    last: float
    slope_per_day: float
    ewma: float
    days_to_breach: float | None

    def to_dict(self) -> dict[str, float | None]:
        """JSON-ready mapping."""
        return {
            "last": self.last,
            "slope_per_day": self.slope_per_day,
            "ewma": self.ewma,
            "days_to_breach": self.days_to_breach,
        }


def _days(times: Sequence[date | datetime]) -> FloatArray:
    t0 = times[0]
    out = []
    for t in times:
        delta = t - t0  # type: ignore[operator]
        out.append(delta.total_seconds() / 86400.0)
    return np.array(out, dtype=np.float64)


def trend_slopes(days: FloatArray, values: FloatArray) -> FloatArray:
    """Least-squares slopes (units per day) of many series sharing time points.

    ``days`` has shape (t,), ``values`` shape (t, s); returns shape (s,). Zero if all times equal.
    """
    x = days - days.mean()
    denom = float(x @ x)
    if denom == 0.0:
        return np.zeros(values.shape[1])
    return np.asarray(x @ (values - values.mean(axis=0)) / denom, dtype=np.float64)


def days_to_breach(last: float, slope_per_day: float, band: float) -> float | None:
    """Days until a signed value moving at ``slope_per_day`` reaches ``+band`` or ``-band``."""
    if abs(last) >= band:
        return 0.0
    if slope_per_day > 0:
        return (band - last) / slope_per_day
    if slope_per_day < 0:
        return (last + band) / -slope_per_day
    return None


def drift_trend(
    snapshots: Sequence[tuple[date | datetime, float]],
    *,
    half_life_days: float = 5.0,
    band: float | None = None,
) -> DriftTrend:
    """Slope, EWMA and estimated days to breach of ``band`` from ``(time, value)`` snapshots.

    Snapshots are sorted by time first. Raises :class:`InvalidInput` if there are none.
    """
    if not snapshots:
        raise InvalidInput("at least one snapshot is needed for a trend", ["snapshots"])
    if half_life_days <= 0:
        raise InvalidInput("half_life_days must be > 0", ["half_life_days"])
    snaps = sorted(snapshots, key=lambda s: s[0])
    days = _days([s[0] for s in snaps])
    vals = np.array([s[1] for s in snaps], dtype=np.float64)
    slope = float(trend_slopes(days, vals[:, None])[0])
    ewma = float(vals[0])
    for k in range(1, len(vals)):
        alpha = 1.0 - 0.5 ** ((days[k] - days[k - 1]) / half_life_days)
        ewma += alpha * (float(vals[k]) - ewma)
    last = float(vals[-1])
    ttb = days_to_breach(last, slope, band) if band is not None else None
    return DriftTrend(last, slope, ewma, ttb)
