"""Risk models for drift: anything that evaluates ``x' Sigma x`` over its instruments, a dense
covariance and a factor model (never densified), and tracking error per row of active weights.

Weights are ``float`` fractions of NAV; :data:`~rebalancer.domain.model.CASH` is riskless.
Tracking error is in the unit of the covariance (annualised return volatility when the
covariance is annualised), i.e. ``sqrt(a' Sigma a)`` with ``a = w - w*``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from rebalancer.domain.arrays import FloatArray, IntArray
from rebalancer.domain.errors import InvalidInput, UnknownInstrument
from rebalancer.domain.model import CASH


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
