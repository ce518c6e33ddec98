"""The stacked household problem in conic form, assembled with scipy.sparse and handed to
Clarabel (or SCS) directly.

Why not CVXPY parameters: the household's loads are parameters multiplying variables
(``u = L'z``), ``sum_a n_a k_a`` of them; CVXPY's DPP compile builds one sparse slice per
parameter entry (10 accounts x 500 instruments x 10 factors: 100,000 slices, minutes) and its
non-DPP path re-canonicalizes every solve (seconds). The conic data here is linear in the
number of accounts and built in milliseconds: index patterns come from the cached
:class:`~rebalancer.optimizer.household.problem.Layout`, values from the request.

Variables (columns, all fractions of each account's NAV, stacked over accounts): ``b`` buys
(N), ``l`` lot sells (L lot columns), ``s`` sold per slot (N), ``T`` transfers (fractions of
household NAV), ``tau``/``sig`` impact epigraph and auxiliary (N each), account factor
exposures ``u`` (F), household factor exposures ``hu`` (k_H) of the household trade ``y``
(n_H, fractions of household NAV). Specific risk is a quadratic straight on ``b - s`` and
``y``.
Rows: zero cone (exposure definitions), nonnegative cone (bounds, ADV, turnover, cash,
transfers, stress), second-order cones (impact ``traded^1.5 <= tau`` as two rotated cones
``traded^2 <= tau * sig``, ``sig^2 <= traded``; tracking-error and VaR limits).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

Arr = NDArray[np.float64]
Idx = NDArray[np.int64]


@dataclass(slots=True)
class Columns:
    """Column offsets of each variable block."""

    N: int
    L: int
    links: int
    F: int
    acct_risk: bool
    k_h: int
    n_h: int
    b: int = 0
    l: int = 0  # noqa: E741 - the lot-sell block
    s: int = 0
    T: int = 0
    tau: int = 0
    sig: int = 0
    u: int = 0
    hu: int = 0
    y: int = 0
    total: int = 0

    def __post_init__(self) -> None:
        at = 0
        for name, size in (
            ("b", self.N),
            ("l", self.L),
            ("s", self.N),
            ("T", self.links),
            ("tau", self.N),
            ("sig", self.N),
            ("u", self.F if self.acct_risk else 0),
            ("hu", self.k_h),
            ("y", self.n_h),
        ):
            setattr(self, name, at)
            at += size
        self.total = at


@dataclass(slots=True)
class Rows:
    """One cone block of rows as COO triplets plus its right-hand side."""

    rows: list[Idx] = field(default_factory=list)
    cols: list[Idx] = field(default_factory=list)
    vals: list[Arr] = field(default_factory=list)
    rhs: list[Arr] = field(default_factory=list)
    count: int = 0

    def add(self, r: Idx, c: Idx, v: Arr) -> None:
        """Entries at block-relative rows ``r`` (already offset by the caller)."""
        self.rows.append(np.asarray(r, np.int64))
        self.cols.append(np.asarray(c, np.int64))
        self.vals.append(np.asarray(v, np.float64))

    def new(self, n: int, rhs: Arr | float = 0.0) -> int:
        """Reserve ``n`` rows with right-hand side ``rhs``; returns the first row."""
        start = self.count
        self.count += n
        self.rhs.append(np.broadcast_to(np.asarray(rhs, np.float64), (n,)).copy())
        return start

    def matrix(self, ncols: int) -> sp.csc_matrix:
        if not self.rows:
            return sp.csc_matrix((self.count, ncols))
        return sp.csc_matrix(
            (np.concatenate(self.vals), (np.concatenate(self.rows), np.concatenate(self.cols))),
            shape=(self.count, ncols),
        )

    def b(self) -> Arr:
        return np.concatenate(self.rhs) if self.rhs else np.zeros(0)


def z_terms(
    col: Columns, rows: Idx, slots: Idx, coef: Arr, sign: float = 1.0
) -> tuple[Idx, Idx, Arr]:
    """Triplets of ``coef * z_slot`` (``z = b - s``, ``s`` the slot's sold weight), or of
    ``coef * traded`` with ``sign = -1`` (``traded = b + s``)."""
    return (
        np.concatenate([rows, rows]),
        np.concatenate([col.b + slots, col.s + slots]),
        np.concatenate([coef, -sign * coef]),
    )


@dataclass(slots=True)
class ConicData:
    """``min 1/2 x'Px + q'x  s.t.  A x + s = b, s in cones`` (objective scaled)."""

    P: sp.csc_matrix
    q: Arr
    A: sp.csc_matrix
    b: Arr
    zero: int
    nonneg: int
    soc: list[int]
