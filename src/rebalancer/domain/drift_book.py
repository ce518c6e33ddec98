"""Vectorised drift of a whole book (m accounts x n instruments) with no Python loop per
account: instrument-level summaries, per-level aggregates through one-hot group matrices and
tracking error per account.

Weights and drifts are ``float`` fractions of NAV; cash is a column. See
:mod:`rebalancer.domain.drift` for the definitions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from rebalancer.domain.arrays import FloatArray, IntArray
from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.risk_models import RiskModel, tracking_error_rows


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
