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

from rebalancer.optimizer.data import BIG, ProblemData
from rebalancer.optimizer.household.data import HouseholdData

Arr = NDArray[np.float64]
Idx = NDArray[np.int64]


def limits_of(d: ProblemData) -> tuple[bool, bool, int]:
    """Which risk limits an account has: tracking error, VaR, stress scenarios."""
    return bool(d.te_limit < BIG), bool(d.var_limit < BIG), int(d.stress_returns.shape[0])


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


class Layout:
    """Where each account sits in the stack: instrument slots, factor slots, lot columns."""

    def __init__(self, hh: HouseholdData) -> None:
        sizes = [a.data.n for a in hh.accounts]
        self.off = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.N = int(self.off[-1])
        # lot columns: every lot of a taxable account (padded to the account's K_a); one
        # merged column per instrument elsewhere (no tax, no wash-sale loss: lots are alike)
        self.lot_k = [a.data.lot_w.shape[1] if a.taxable else 1 for a in hh.accounts]
        counts = [n * k for n, k in zip(sizes, self.lot_k, strict=True)]
        self.lot_off = np.concatenate([[0], np.cumsum(counts)]).astype(int)
        self.L = int(self.lot_off[-1])
        self.lot_slot = np.concatenate(
            [
                np.repeat(np.arange(n) + self.off[a], k)
                for a, (n, k) in enumerate(zip(sizes, self.lot_k, strict=True))
            ]
        ).astype(np.int64)
        ks = [a.data.factor_load.shape[1] for a in hh.accounts]
        self.foff = np.concatenate([[0], np.cumsum(ks)]).astype(int)
        self.account_of = np.repeat(np.arange(len(sizes)), sizes)
        # account factor exposures: one entry per (slot, factor of its account)
        rows, cols = [], []
        for a, (n, k) in enumerate(zip(sizes, ks, strict=True)):
            rows.append(np.repeat(np.arange(n) + self.off[a], k))
            cols.append(np.tile(np.arange(k), n) + self.foff[a])
        self.rep_slot = np.concatenate(rows) if rows else np.zeros(0, int)
        self.rep_factor = np.concatenate(cols) if cols else np.zeros(0, int)
        self.hh_idx = np.concatenate([a.idx for a in hh.accounts]).astype(np.int64)
        self.acct_risk = hh.account_weight > 0 or any(
            any(limits_of(a.data)[:2]) for a in hh.accounts
        )
        self.columns = Columns(
            self.N,
            self.L,
            len(hh.links),
            int(self.foff[-1]),
            self.acct_risk,
            hh.load.shape[1] if hh.target is not None else 0,
            len(hh.ids) if hh.target is not None else 0,
        )

    def stack(self, hh: HouseholdData, get: str, scaled: bool = False) -> Arr:
        """Concatenate one per-instrument array of every account (times ``s_a`` if scaled)."""
        parts = [getattr(a.data, get) * (a.share if scaled else 1.0) for a in hh.accounts]
        return np.concatenate(parts)

    def lots(self, hh: HouseholdData, get: str, scaled: bool = False) -> Arr:
        """One value per lot column: the lot's own (taxable accounts) or the sum over the
        instrument's lots (merged columns: bounds add up; their tax rates are 0, as outside a
        taxable account the request is solved with rates 0)."""
        out = []
        for a, k in zip(hh.accounts, self.lot_k, strict=True):
            arr = getattr(a.data, get) * (a.share if scaled else 1.0)
            out.append(arr.ravel() if k == arr.shape[1] and a.taxable else arr.sum(axis=1))
        return np.concatenate(out)

    def unstack(self, hh: HouseholdData, x_lot: Arr) -> list[Arr]:
        """Lot columns back to every account's ``(n, K_a)`` lot sells (a merged column is
        spread over the instrument's lots pro rata to what each may sell)."""
        out = []
        for a, part in enumerate(hh.accounts):
            d = part.data
            seg = x_lot[self.lot_off[a] : self.lot_off[a + 1]]
            if self.lot_k[a] == d.lot_w.shape[1] and part.taxable:
                out.append(seg.reshape(d.n, -1).copy())
                continue
            room = d.lot_ub.sum(axis=1)
            frac = np.divide(
                d.lot_ub, room[:, None], out=np.zeros_like(d.lot_ub), where=room[:, None] > 0
            )
            out.append(frac * seg[:, None])
        return out


def implied_bounds(hh: HouseholdData) -> tuple[Arr, Arr, Arr]:
    """Bounds implied by the cash floors (valid for every feasible answer): per account the
    most it can spend (fraction of its NAV: cash above the floor, every sellable lot, every
    transfer it can receive), what it can sell, and per link the most it can carry
    (fraction of H)."""
    share = np.array([a.share for a in hh.accounts])
    sellable = np.array([float(a.data.lot_ub.sum()) for a in hh.accounts])
    room = np.array([max(a.data.cash / a.data.nav - a.data.cash_floor, 0.0) for a in hh.accounts])
    out_cap = share * (room + sellable)
    link = np.array(
        [min(float(c), out_cap[src]) for (src, _), c in zip(hh.links, hh.link_cap, strict=True)]
    )
    inflow = np.zeros(len(share))
    for (_, dst), c in zip(hh.links, link, strict=True):
        inflow[dst] += c
    spend = room + sellable + inflow / share
    return spend, sellable, link
