"""Drift of current weights from target weights, at every level, for one account or a whole book.

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
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from rebalancer.domain.errors import InvalidInput, UnknownInstrument
from rebalancer.domain.model import CASH, WEIGHT_TOLERANCE, Instrument, Sleeve, validate_targets

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

LEVELS = ("instrument", "sector", "asset_class", "sleeve")
"""Levels reported per key; the account level is the :class:`LevelSummary` of instruments."""

CASH_GROUP = "cash"
"""Sector and asset class that :data:`~rebalancer.domain.model.CASH` belongs to."""


# --------------------------------------------------------------------------- risk models
class RiskModel(Protocol):
    """Anything that can evaluate ``x' Sigma x`` for active-weight vectors over its instruments."""

    @property
    def instruments(self) -> tuple[str, ...]:
        """Instrument ids, in the order of the model's rows and columns."""
        ...

    def quad_form_rows(self, X: FloatArray) -> FloatArray:
        """``diag(X Sigma X')`` for ``X`` of shape (m, n): one variance per row."""
        ...

    def cov_rows(self, X: FloatArray) -> FloatArray:
        """``X Sigma`` for ``X`` of shape (m, n) (marginal risk, without densifying Sigma)."""
        ...


@dataclass(frozen=True)
class CovarianceModel:
    """Dense covariance ``Sigma`` (n x n) over ``instruments`` (e.g. annualised return units)."""

    instruments: tuple[str, ...]
    cov: FloatArray

    def __post_init__(self) -> None:
        n = len(self.instruments)
        if self.cov.shape != (n, n):
            raise InvalidInput(
                f"covariance has shape {self.cov.shape}; expected ({n}, {n})", ["risk_model.cov"]
            )

    def quad_form_rows(self, X: FloatArray) -> FloatArray:
        """``diag(X Sigma X')`` for ``X`` of shape (m, n)."""
        out: FloatArray = np.einsum("ij,ij->i", X @ self.cov, X)
        return out

    def cov_rows(self, X: FloatArray) -> FloatArray:
        """``X Sigma`` for ``X`` of shape (m, n)."""
        out: FloatArray = X @ self.cov
        return out


@dataclass(frozen=True)
class FactorModel:
    """Factor risk model ``Sigma = B F B' + diag(d)``, never densified.

    Attributes
    ----------
    instruments
        Instrument ids (n).
    exposures
        ``B``, shape (n, k): factor loadings.
    factor_cov
        ``F``, shape (k, k): factor covariance.
    specific_var
        ``d``, shape (n,): specific (idiosyncratic) variances.
    """

    instruments: tuple[str, ...]
    exposures: FloatArray
    factor_cov: FloatArray
    specific_var: FloatArray

    def __post_init__(self) -> None:
        n, k = len(self.instruments), self.factor_cov.shape[0]
        if self.exposures.shape != (n, k) or self.factor_cov.shape != (k, k):
            raise InvalidInput(
                f"exposures {self.exposures.shape} and factor_cov {self.factor_cov.shape} "
                f"do not fit {n} instruments",
                ["risk_model.exposures", "risk_model.factor_cov"],
            )
        if self.specific_var.shape != (n,):
            raise InvalidInput(
                f"specific_var has shape {self.specific_var.shape}; expected ({n},)",
                ["risk_model.specific_var"],
            )

    def quad_form_rows(self, X: FloatArray) -> FloatArray:
        """``diag(X B F B' X') + (X**2) d`` for ``X`` of shape (m, n), in O(m n k)."""
        Y = X @ self.exposures
        out: FloatArray = np.einsum("ij,ij->i", Y @ self.factor_cov, Y)
        return out + (X * X) @ self.specific_var

    def cov_rows(self, X: FloatArray) -> FloatArray:
        """``X B F B' + X diag(d)`` for ``X`` of shape (m, n), in O(m n k)."""
        out: FloatArray = ((X @ self.exposures) @ self.factor_cov) @ self.exposures.T
        return out + X * self.specific_var


def _risk_columns(risk_model: RiskModel, instruments: Sequence[str]) -> IntArray:
    """Map ``instruments`` to risk-model columns; -1 for cash. Unknown instruments raise."""
    index = {inst: j for j, inst in enumerate(risk_model.instruments)}
    cols = np.empty(len(instruments), dtype=np.int64)
    for i, inst in enumerate(instruments):
        if inst == CASH:
            cols[i] = -1
        elif inst in index:
            cols[i] = index[inst]
        else:
            raise UnknownInstrument(
                f"{inst} is held or targeted but missing from the risk model",
                ["risk_model.instruments"],
            )
    return cols


def risk_vector(weights: Mapping[str, float], risk_model: RiskModel) -> FloatArray:
    """Weights (fractions of NAV) as a vector in the risk model's instrument order; cash dropped.

    Raises :class:`UnknownInstrument` for a non-cash key missing from the risk model.
    """
    keys = sorted(weights)
    cols = _risk_columns(risk_model, keys)
    x = np.zeros(len(risk_model.instruments))
    for key, col in zip(keys, cols.tolist(), strict=True):
        if col >= 0:
            x[col] = weights[key]
    return x


def tracking_error_rows(
    active: FloatArray, instruments: Sequence[str], risk_model: RiskModel
) -> FloatArray:
    """Tracking-error drift ``sqrt(a' Sigma a)`` per row of ``active`` (m x len(instruments)).

    Cash is riskless. Columns are re-ordered into the risk model's order by index (no copy of
    ``Sigma``). Tiny negative variances from rounding are clipped to zero.
    """
    cols = _risk_columns(risk_model, instruments)
    X = np.zeros((active.shape[0], len(risk_model.instruments)))
    keep = cols >= 0
    X[:, cols[keep]] = active[:, keep]  # instrument labels are unique, so no collisions
    return np.sqrt(np.maximum(risk_model.quad_form_rows(X), 0.0))


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


# --------------------------------------------------------------------------- whole book
def group_matrix(labels: Sequence[str]) -> tuple[tuple[str, ...], FloatArray]:
    """One-hot membership matrix ``G`` (n instruments x g groups) from one label per instrument.

    Returns the sorted group labels and ``G`` with ``G[i, k] = 1`` iff instrument ``i`` is in
    group ``k``, so that ``A @ G`` aggregates active weights ``A`` (m x n) per group.
    """
    names = tuple(sorted(set(labels)))
    pos = {g: k for k, g in enumerate(names)}
    G = np.zeros((len(labels), len(names)))
    G[np.arange(len(labels)), [pos[g] for g in labels]] = 1.0
    return names, G


@dataclass(frozen=True)
class LevelArrays:
    """Per-group drift of a book at one level; ``active`` has shape (m accounts, g groups)."""

    groups: tuple[str, ...]
    active: FloatArray
    sum_abs: FloatArray
    max_abs: FloatArray
    argmax: IntArray
    """Column index into ``groups`` of each account's largest absolute drift."""


@dataclass(frozen=True)
class BookDrift:
    """Drift of m accounts over n instruments (columns in ``instruments`` order, cash included).

    Attributes
    ----------
    active
        ``W - T``, shape (m, n), fractions of NAV.
    sum_abs, turnover, max_abs
        Per-account instrument-level summaries, shape (m,); ``turnover = sum_abs / 2``.
    argmax
        Column of each account's largest absolute instrument drift, shape (m,).
    tracking_error
        ``sqrt(a' Sigma a)`` per account, shape (m,), or ``None`` without a risk model.
    levels
        Level name -> :class:`LevelArrays` for each group matrix given.
    """

    instruments: tuple[str, ...]
    active: FloatArray
    sum_abs: FloatArray
    turnover: FloatArray
    max_abs: FloatArray
    argmax: IntArray
    tracking_error: FloatArray | None
    levels: Mapping[str, LevelArrays]

    def breached(
        self,
        *,
        max_abs: float | None = None,
        turnover: float | None = None,
        tracking_error: float | None = None,
    ) -> npt.NDArray[np.bool_]:
        """Boolean mask (m,) of accounts at or beyond any of the given bands (fractions of NAV;
        tracking error in risk-model units): the accounts worth a detailed evaluation."""
        mask = np.zeros(self.active.shape[0], dtype=bool)
        if max_abs is not None:
            mask |= self.max_abs >= max_abs
        if turnover is not None:
            mask |= self.turnover >= turnover
        if tracking_error is not None and self.tracking_error is not None:
            mask |= self.tracking_error >= tracking_error
        return mask

    def relative(self, targets: FloatArray) -> FloatArray:
        """Relative drift ``active / targets`` (NaN where the target is 0)."""
        T = np.broadcast_to(targets, self.active.shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(T > 0, self.active / np.where(T > 0, T, 1.0), np.nan)


def book_drift(
    weights: FloatArray,
    targets: FloatArray,
    instruments: Sequence[str],
    *,
    groups: Mapping[str, tuple[tuple[str, ...], FloatArray]] | None = None,
    risk_model: RiskModel | None = None,
) -> BookDrift:
    """Vectorised drift of a whole book: no Python loop per account.

    Parameters
    ----------
    weights
        Current weights, shape (m accounts, n instruments), fractions of NAV, cash a column.
    targets
        Target weights, shape (m, n) or (n,) (broadcast to every account).
    instruments
        Column labels (n), e.g. ``("AAPL", ..., "CASH")``.
    groups
        Level name -> ``(labels, G)`` from :func:`group_matrix`; aggregates are ``A @ G``.
    risk_model
        Optional risk model for tracking-error drift (cash riskless).

    Raises
    ------
    InvalidInput
        Shapes inconsistent or values not finite.
    """
    W = np.asarray(weights, dtype=np.float64)
    T = np.asarray(targets, dtype=np.float64)
    n = len(instruments)
    if len(set(instruments)) != n:
        raise InvalidInput("instrument column labels must be unique", ["instruments"])
    if W.ndim != 2 or W.shape[1] != n or T.shape[-1] != n or T.ndim not in (1, 2):
        raise InvalidInput(
            f"weights {W.shape} and targets {T.shape} must have {n} columns",
            ["weights", "targets"],
        )
    if not (np.isfinite(W).all() and np.isfinite(T).all()):
        raise InvalidInput("weights and targets must be finite", ["weights", "targets"])
    A = W - T
    absA = np.abs(A)
    sum_abs = absA.sum(axis=1)
    argmax = absA.argmax(axis=1) if n else np.zeros(W.shape[0], dtype=np.int64)
    max_abs = absA.max(axis=1) if n else np.zeros(W.shape[0])
    levels: dict[str, LevelArrays] = {}
    for name, (labels, G) in (groups or {}).items():
        if G.shape != (n, len(labels)):
            raise InvalidInput(
                f"group matrix {name} has shape {G.shape}; expected ({n}, {len(labels)})",
                [f"groups.{name}"],
            )
        Ag = A @ G
        absG = np.abs(Ag)
        levels[name] = LevelArrays(
            labels, Ag, absG.sum(axis=1), absG.max(axis=1), absG.argmax(axis=1).astype(np.int64)
        )
    te = tracking_error_rows(A, instruments, risk_model) if risk_model is not None else None
    return BookDrift(
        tuple(instruments), A, sum_abs, sum_abs / 2.0, max_abs, argmax.astype(np.int64), te, levels
    )


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
