"""Shared pieces of the optimizer terms: decision variables, trade vectors, checks.

A term declares its ``cp.Parameter`` objects once (in ``__init__``), builds its CVXPY expression
or constraints once, copies request values into its parameters in ``update`` and evaluates
itself in plain NumPy on a trade vector (``value`` / ``check``) for the independent re-check.
"""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
from numpy.typing import NDArray

from rebalancer.optimizer.data import BIG, ProblemData, Shape
from rebalancer.optimizer.enums import ConstraintName
from rebalancer.optimizer.terms import atoms

Arr = NDArray[np.float64]


_ONES: dict[int, Arr] = {}


def _ones(k: int) -> Arr:
    """A read-only vector of ``k`` ones, made once per ``k``."""
    v = _ONES.get(k)
    if v is None:
        v = np.ones(k)
        v.flags.writeable = False
        _ONES[k] = v
    return v


def row_sum(a: Arr) -> Arr:
    """``a.sum(axis=1)`` of an ``(n, K)`` array with few columns, as one matrix-vector
    product (a quarter of the time of NumPy's reduction along the short axis)."""
    out: Arr = a @ _ones(a.shape[1])
    return out


_SEQUENTIAL_MAX = 7
"""NumPy sums a reduction of up to 7 entries one by one from ``0.0`` (its pairwise summation
unrolls from 8), so column adds from the left give its very floats up to this many columns."""


_ROWS_PER_COLUMN = 50
"""Rows per column from which the column adds beat NumPy's reduction along the short axis
(measured: that costs a fixed few us plus about 0.025 us per row of 4; an add about 1.7 us)."""


def exact_row_sum(a: Arr) -> Arr:
    """``a.sum(axis=1)`` of an ``(n, K)`` array, the same floats, faster for many rows: for
    ``K <= 7`` and ``n >= 50 K`` as ``K`` column additions from the left starting at ``0.0``
    (NumPy's order there), else NumPy's own reduction."""
    n, k = a.shape
    if not 0 < k <= _SEQUENTIAL_MAX or n < _ROWS_PER_COLUMN * k:
        out: Arr = a.sum(axis=1)
        return out
    out = a[:, 0] + 0.0  # a new array; ``0.0 + -0.0`` is ``0.0`` as in NumPy's sum
    for j in range(1, k):
        out += a[:, j]
    return out


@dataclass(slots=True)
class TradeVec:
    """A trade in fractions of NAV: ``buy`` per instrument (n,), ``lot_sell`` per lot (n, K)."""

    buy: Arr
    lot_sell: Arr

    @property
    def sell(self) -> Arr:
        """Sold weight per instrument (fraction of NAV)."""
        return row_sum(self.lot_sell)

    @property
    def z(self) -> Arr:
        """Net trade per instrument (fraction of NAV, buy > 0)."""
        return self.buy - self.sell

    @property
    def traded(self) -> Arr:
        """Gross traded weight per instrument (buys plus sells, fraction of NAV)."""
        return self.buy + self.sell

    def post(self, w: Arr) -> Arr:
        """Post-trade weights ``w + z`` per instrument (fraction of NAV)."""
        out: Arr = w + self.z
        return out

    @staticmethod
    def zero(shape: Shape) -> TradeVec:
        return TradeVec(np.zeros(shape.n), np.zeros((shape.n, shape.lots_per_instrument)))

    def summed(self) -> TradeVec:
        """The same trade with ``sell``, ``z`` and ``traded`` computed once (for evaluating
        many terms on a trade that does not change meanwhile; same values)."""
        if isinstance(self, SummedTradeVec):
            return self
        sell = row_sum(self.lot_sell)
        return SummedTradeVec(self.buy, self.lot_sell, sell, self.buy - sell, self.buy + sell)


@dataclass(slots=True)
class SummedTradeVec(TradeVec):
    """A :class:`TradeVec` with its per-instrument sums stored (see :meth:`TradeVec.summed`);
    never changed in place."""

    sell_: Arr
    z_: Arr
    traded_: Arr
    post_: tuple[Arr, Arr] | None = None
    """The weights ``w`` last given to :meth:`post` and ``w + z`` (read-only)."""

    @property
    def sell(self) -> Arr:
        return self.sell_

    @property
    def z(self) -> Arr:
        return self.z_

    @property
    def traded(self) -> Arr:
        return self.traded_

    def post(self, w: Arr) -> Arr:
        """``w + z`` made once for the terms that all read it (the same floats), again only
        for another ``w`` object (a request's weights are never changed in place)."""
        last = self.post_
        if last is not None and last[0] is w:
            return last[1]
        out: Arr = w + self.z_
        out.flags.writeable = False
        self.post_ = (w, out)
        return out


class Variables:
    """Decision variables shared by all terms (fractions of NAV).

    Attributes
    ----------
    buy
        Bought weight per instrument, >= 0.
    lot_sell
        Sold weight per lot (n, K), >= 0; a lot's sold fraction is ``lot_sell / lot_w``.
    """

    def __init__(self, shape: Shape) -> None:
        self.buy = cp.Variable(shape.n, nonneg=True, name="buy")
        self.lot_sell = cp.Variable(
            (shape.n, shape.lots_per_instrument), nonneg=True, name="lot_sell"
        )
        self.sell = cp.Variable(shape.n, nonneg=True, name="sell")
        self.constraints: list[cp.Constraint] = [self.sell == atoms.sum_(self.lot_sell, axis=1)]
        self.z = self.buy - self.sell
        self.traded = self.buy + self.sell


def within(value: float, limit: float, lower: bool = False, tol: float = 1e-9) -> bool:
    """Whether ``value <= limit`` (``value >= limit`` when ``lower``) holds within ``tol``
    relative to ``max(1, |limit|)``: the test of :meth:`Check.holds`, for a term that answers
    without building its check."""
    slack = value - limit if lower else limit - value
    return slack >= -tol * max(1.0, abs(limit))


@dataclass(frozen=True, slots=True)
class Check:
    """One constraint evaluated in NumPy: it holds when ``slack >= 0`` (within tolerance)."""

    name: ConstraintName
    fields: tuple[str, ...]
    subject: str
    value: float
    limit: float
    lower: bool = False
    """When true the constraint is ``value >= limit`` (a floor)."""

    @property
    def slack(self) -> float:
        return self.value - self.limit if self.lower else self.limit - self.value

    def holds(self, tol: float = 1e-9) -> bool:
        return within(self.value, self.limit, self.lower, tol)


class CostTerm(ABC):
    """A term of the objective (fraction of NAV)."""

    label: str

    @property
    @abstractmethod
    def expr(self) -> cp.Expression:
        """The CVXPY expression (built once)."""

    @abstractmethod
    def update(self, data: ProblemData) -> None:
        """Copy the request's values into the parameters."""

    @abstractmethod
    def value(self, data: ProblemData, t: TradeVec) -> float:
        """The term evaluated in NumPy on ``t`` (fraction of NAV)."""


class ConstraintTerm(ABC):
    """A group of constraints; ``relaxed`` ones get inactive limits (used to diagnose)."""

    name: ConstraintName
    relaxable: bool = True

    def __init__(self) -> None:
        self.relaxed = False
        self.constraints: list[cp.Constraint] = []

    def limit(self, value: float) -> float:
        return BIG if self.relaxed else value

    @abstractmethod
    def update(self, data: ProblemData) -> None:
        """Copy the request's values into the parameters."""

    @abstractmethod
    def check(self, data: ProblemData, t: TradeVec) -> list[Check]:
        """Evaluate every constraint of the group in NumPy on ``t``."""

    def clearly_holds(self, data: ProblemData, t: TradeVec) -> bool:
        """``True`` only when every check of :meth:`check` holds (:meth:`Check.holds`, the
        same floats); ``False`` may also mean undecided (NaN, no entries, empty lot slots):
        :meth:`check` then tells. Groups with one check per entity answer without building
        the checks (a cheap test for a solver's answer that is expected to hold)."""
        return all(c.holds() for c in self.check(data, t))

    def fields(self, data: ProblemData) -> list[str]:
        """Request fields that set this group's limits."""
        return data.policy_fields.get(self.name.value, [])


def set_param(param: cp.Parameter, value: float | Arr, fixed: bool = False) -> None:
    """Store ``value`` in ``param`` with a shape and sign check only.

    CVXPY's ``Parameter.value`` setter projects every value onto the parameter's attributes
    (``allclose`` on each array), which dominated a request's time; the values here come from
    :class:`ProblemData`, so checking the shape and, for ``nonneg`` parameters, the sign is
    enough. With ``fixed`` (``value`` is an array of the request that is never changed in
    place, or a read-only :class:`Memo` value) a parameter that already holds this very object
    keeps it unchecked: it was checked when stored (the same request's second update).

    Raises
    ------
    ValueError
        The value has the wrong shape or is negative (or NaN) for a ``nonneg`` parameter.
    """
    if fixed and param.value is value:
        return
    nonneg = param.attributes["nonneg"]
    if param.shape == ():
        val: float | Arr = float(value)  # type: ignore[arg-type]
        # a Python comparison: False for a negative value and for NaN, as the array test
        if nonneg and not val >= 0.0:
            raise ValueError(f"parameter {param.name()} must be >= 0")
    else:
        val = np.asarray(value, dtype=np.float64)
        if val.shape != param.shape:
            raise ValueError(f"parameter {param.name()} needs shape {param.shape}, got {val.shape}")
        # ``min() >= 0`` is ``(val >= 0).all()`` (NaN propagates to the minimum and compares
        # False) without the boolean temporary; an empty array holds no negative entry
        if nonneg and val.size and not val.min() >= 0.0:
            raise ValueError(f"parameter {param.name()} must be >= 0")
    param.save_value(val)  # type: ignore[no-untyped-call]


class Memo:
    """One array derived from some source arrays, made again only when a source is another
    object than last time.

    For arrays of :class:`ProblemData` that are never changed in place (``w``, ``target``,
    ``factor_load``, ``specific_sd``: a request's values; not ``buy_ub`` / ``lot_ub``, which
    wash-sale settling changes in place), so a second ``update`` of the same request reuses
    the product (the same floats). The sources are held, so their identities cannot be reused
    by other arrays; the value is read-only (a parameter may hold it).
    """

    __slots__ = ("_entry",)

    def __init__(self) -> None:
        # sources and value in one tuple: a reader never pairs one call's value with
        # another's sources
        self._entry: tuple[tuple[Arr, ...], Arr] | None = None

    def get(self, sources: tuple[Arr, ...], make: Callable[[], Arr]) -> Arr:
        """The value ``make()`` gave for these very ``sources`` (made now if they differ).

        Parameters
        ----------
        sources
            The arrays ``make`` reads (compared by identity).
        make
            Computes the value from ``sources``.
        """
        entry = self._entry
        if (
            entry is not None
            and len(entry[0]) == len(sources)
            and all(map(operator.is_, entry[0], sources))
        ):
            return entry[1]
        value = make()
        value.flags.writeable = False
        self._entry = (sources, value)
        return value


_SD_SQUARED = Memo()
"""``specific_sd**2`` of the request last seen (see :class:`Memo`)."""


def sigma_times(data: ProblemData, x: Arr) -> Arr:
    """``Sigma @ x`` from the factor form, never building the n x n matrix."""
    sd = data.specific_sd
    sd2 = _SD_SQUARED.get((sd,), lambda: sd**2)  # the same floats, squared once per request
    out: Arr = data.factor_load @ (data.factor_load.T @ x) + sd2 * x
    return out


def volatility(data: ProblemData, x: Arr) -> float:
    """Ex-ante volatility of weights ``x`` (risk-model horizon)."""
    return float(np.sqrt(max(float(x @ sigma_times(data, x)), 0.0)))
