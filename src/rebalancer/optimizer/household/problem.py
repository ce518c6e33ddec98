"""The household problem, stacked: every account's buys and lot sells are one variable each,
account sums are sparse aggregation matrices and account scalings are vectors, so the
problem's size and its assembly time are linear in the number of accounts.

Objective (fractions of household NAV ``H``, ``s_a = NAV_a / H``)::

    sum_a s_a * [ lambda * tracking_a + spread_a + impact_a + tax_a ]       account terms
    + gamma_H * (x - x*)' Sigma_H (x - x*)                                   household tracking
    + sum_{a taxable} s_a * horizon * drag' (w_a + z_a)                     asset location
    + transfer_cost * sum_l T_l                                             cash moved

with ``x = sum_a s_a M_a (w_a + z_a)`` the household weights. Layout: the accounts'
instruments are stacked into one vector of ``N = sum_a n_a`` slots and their lots into one
``(N, K)`` matrix (``K`` = most lots of one instrument in any account; padded lots have bound
0). Risk is in factor form throughout, never an ``n x n`` matrix: account exposures
``u_a = L_a'(w_a + z_a - w*_a)``, ``v_a = s_a * (...)`` and household exposures
``L_H'(x - x*)``, ``s_H * (x - x*)`` are variables defined by sparse equality rows.

The terms are the single-account ones with the same definitions (spread and fees, square-root
impact, lot tax, tracking; cash floor, turnover, ADV caps, buy and lot bounds; tracking error,
VaR and stress ``max_loss`` limits of :mod:`rebalancer.optimizer.terms.risk`), written once
more as rows of the stacked conic problem (:mod:`rebalancer.optimizer.household.conic`); the
answer of every account is re-checked with the single-account classes themselves
(:class:`~rebalancer.optimizer.household.terms.AccountTerms`). The index patterns are built
once per :func:`structure_key` (:class:`Layout`, cached with the problem); a solve fills in
values and runs Clarabel; wash-sale settling rounds only change bounds (``b``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from rebalancer.optimizer.engine import tightened
from rebalancer.optimizer.enums import SolverName, SolveStatus
from rebalancer.optimizer.household.conic import (
    ConicData,
    Idx,
    Layout,
    Rows,
    implied_bounds,
    limits_of,
    z_terms,
)
from rebalancer.optimizer.household.data import Arr, HouseholdData
from rebalancer.optimizer.household.solve import solve_conic
from rebalancer.optimizer.household.terms import AccountTerms
from rebalancer.optimizer.problem import SCALE
from rebalancer.optimizer.terms.base import TradeVec

_RHO = 1e-3
"""Scale of the impact cones (a typical traded weight, fraction of NAV)."""


def structure_key(hh: HouseholdData) -> tuple[object, ...]:
    """What the compiled problem depends on (everything else is a parameter value)."""
    return (
        tuple(
            (
                a.data.n,
                a.data.lot_w.shape[1],
                a.data.factor_load.shape[1],
                limits_of(a.data),
                a.taxable,
            )
            for a in hh.accounts
        ),
        tuple(tuple(int(i) for i in a.idx) for a in hh.accounts),
        len(hh.ids),
        hh.load.shape[1],
        tuple(hh.links),
        hh.target is not None,
        hh.account_weight > 0,
        hh.te_limit is not None,
    )


@dataclass(slots=True)
class HouseholdTrade:
    """A trade per account (fractions of each account's NAV) and transfers (fractions of H)."""

    trades: list[TradeVec]
    transfers: Arr

    def net_in(self, hh: HouseholdData) -> Arr:
        """Net cash received per account (fraction of H)."""
        out = np.zeros(len(hh.accounts))
        for (src, dst), amount in zip(hh.links, self.transfers, strict=True):
            out[src] -= amount
            out[dst] += amount
        return out


_Solved = tuple[SolveStatus, SolverName, HouseholdTrade | None, float]


def household_te_limit(hh: HouseholdData) -> float:
    """The household tracking-error limit the solver uses: tightened by the most rounding
    every account to whole ``lot_size`` steps can move it (as the single-account engine does
    with its own limits), so rounding keeps it."""
    assert hh.te_limit is not None
    sd = np.sqrt((hh.load**2).sum(axis=1) + hh.spec**2)
    margin = sum(
        float((a.share * a.data.lot_size * a.data.price / (2.0 * a.data.nav)) @ sd[a.idx])
        for a in hh.accounts
    )
    return max(hh.te_limit - margin, 0.5 * hh.te_limit)


class HouseholdProblem:
    """The stacked household problem of one structure: its layout (index patterns) and the
    per-account NumPy terms; :meth:`update` fills in one household's values."""

    def __init__(self, hh: HouseholdData) -> None:
        self.key = structure_key(hh)
        self.layout = Layout(hh)
        self.accounts = [AccountTerms(a.data) for a in hh.accounts]
        self.data: ConicData | None = None
        self.constant = 0.0
        """Objective constant left out of the conic data (fraction of household NAV)."""
        self.value = 0.0
        """Objective of the last answer (fraction of household NAV, without the constant
        location of current holdings)."""
        self.compiled = False
        self._hh = hh

    # ------------------------------------------------------------------ assembly
    def update(self, hh: HouseholdData) -> None:
        """Assemble the conic data of ``hh`` (same structure as the one compiled)."""
        self._hh = hh
        lay, col = self.layout, self.layout.columns
        N, L = lay.N, lay.L
        slots = np.arange(N, dtype=np.int64)
        share = np.array([a.share for a in hh.accounts])
        zero, nonneg = Rows(), Rows()
        soc = Rows()
        soc_dims: list[int] = []
        q = np.zeros(col.total)
        # --- objective (linear part): spread, tax, location, impact, transfers
        rate = lay.stack(hh, "cost", scaled=True)
        loc = np.concatenate([a.share * hh.horizon * a.drag for a in hh.accounts])
        q[col.b : col.b + N] += rate + loc
        q[col.s : col.s + N] += rate - loc
        q[col.l : col.l + L] += lay.lots(hh, "lot_tax", True)
        # sold per slot = sum of its lot sells
        r = zero.new(N, 0.0)
        zero.add(r + slots, col.s + slots, np.ones(N))
        zero.add(r + lay.lot_slot, col.l + np.arange(L), -np.ones(L))
        q[col.tau : col.tau + N] += lay.stack(hh, "impact", scaled=True) * np.sqrt(_RHO)
        q[col.T : col.T + col.links] += hh.transfer_cost
        # --- bounds: 0 <= b <= buy_ub, 0 <= l <= lot_ub, 0 <= T <= cap, traded <= ADV cap;
        # a limit looser than what the cash floor implies is left out, a link's cap and the
        # turnover cap are cut to it (far-away inactive bounds slow the solver: ~45 iterations
        # instead of ~30)
        spend, sellable, link_cap = implied_bounds(hh)
        per_slot = np.repeat(spend, np.diff(lay.off))
        buy_ub = lay.stack(hh, "buy_ub")
        adv_cap = lay.stack(hh, "adv_cap")
        turnover = np.minimum([a.data.turnover_limit for a in hh.accounts], 2 * spend + sellable)
        nb = N + L + col.links
        r = nonneg.new(nb, 0.0)
        idx = np.arange(nb, dtype=np.int64)
        nonneg.add(
            r + idx,
            np.concatenate([col.b + slots, col.l + np.arange(L), col.T + np.arange(col.links)]),
            -np.ones(nb),
        )
        # upper bounds only where they may bind (the cash floor already bounds the rest)
        cap = np.concatenate([buy_ub, lay.lots(hh, "lot_ub"), link_cap])
        keep = np.concatenate([buy_ub < per_slot, np.ones(L + col.links, bool)])
        r = nonneg.new(int(keep.sum()), cap[keep])
        nonneg.add(
            r + np.arange(int(keep.sum())),
            np.concatenate([col.b + slots, col.l + np.arange(L), col.T + np.arange(col.links)])[
                keep
            ],
            np.ones(int(keep.sum())),
        )
        tight = np.flatnonzero(adv_cap < per_slot + np.repeat(sellable, np.diff(lay.off)))
        r = nonneg.new(len(tight), adv_cap[tight])
        nonneg.add(*z_terms(col, r + np.arange(len(tight)), tight, np.ones(len(tight)), sign=-1.0))
        # --- per account: turnover and cash floor (with the net transfer / s_a)
        acct = lay.account_of.astype(np.int64)
        n_acc = len(hh.accounts)
        r = nonneg.new(n_acc, turnover)
        nonneg.add(*z_terms(col, r + acct, slots, np.ones(N), sign=-1.0))
        room = np.array([a.data.cash / a.data.nav - a.data.cash_floor for a in hh.accounts])
        r = nonneg.new(n_acc, room)
        nonneg.add(*z_terms(col, r + acct, slots, np.ones(N)))
        for m, (src, dst) in enumerate(hh.links):
            nonneg.add(
                np.array([r + src, r + dst]),
                np.array([col.T + m] * 2),
                np.array([1.0 / share[src], -1.0 / share[dst]]),
            )
        # --- stress: -R_a z_a <= max_loss + R_a w_a per scenario
        for a, part in enumerate(hh.accounts):
            d = part.data
            n_s = d.stress_returns.shape[0]
            if not n_s:
                continue
            r = nonneg.new(n_s, tightened(d).stress_limit + d.stress_returns @ d.w)
            rr, ss = np.nonzero(np.ones((n_s, d.n)))
            nonneg.add(*z_terms(col, r + rr, lay.off[a] + ss, -d.stress_returns[rr, ss]))
        # --- impact traded^1.5 <= sqrt(rho) * tau, per slot, as two rotated cones
        # traded^2 <= tau * sig and sig^2 <= rho * traded (rho: scale of a trade, for
        # conditioning)
        r0 = soc.new(6 * N, np.tile([0.0, 0.0, 0.0, _RHO, 0.0, -_RHO], N))
        base = r0 + 6 * slots
        soc.add(
            np.concatenate([base, base, base + 2, base + 2]),
            np.concatenate([col.tau + slots, col.sig + slots, col.tau + slots, col.sig + slots]),
            np.concatenate([-np.ones(N), -np.ones(N), -np.ones(N), np.ones(N)]),
        )
        soc.add(*z_terms(col, base + 1, slots, np.full(N, -2.0), sign=-1.0))
        soc.add(*z_terms(col, base + 3, slots, -np.ones(N), sign=-1.0))
        soc.add(base + 4, col.sig + slots, np.full(N, -2.0))
        soc.add(*z_terms(col, base + 5, slots, -np.ones(N), sign=-1.0))
        soc_dims += [3] * (2 * N)
        self._P: list[tuple[Idx, Idx, Arr]] = []
        self._q, self._const = q, 0.0
        if lay.acct_risk:
            self._account_risk(hh, zero, soc, soc_dims)
        if hh.target is not None:
            self._household_risk(hh, zero, soc, soc_dims)
        A = sp.vstack(
            [zero.matrix(col.total), nonneg.matrix(col.total), soc.matrix(col.total)], format="csc"
        )
        b = np.concatenate([zero.b(), nonneg.b(), soc.b()])
        pr, pc, pv = (
            (np.concatenate(x) for x in zip(*self._P, strict=True))
            if self._P
            else (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
        )
        P = sp.csc_matrix((SCALE * pv, (pr, pc)), shape=(col.total, col.total))
        self.data = ConicData(P, SCALE * q, A, b, zero.count, nonneg.count, soc_dims)
        self.constant = self._const

    def _account_risk(self, hh: HouseholdData, zero: Rows, soc: Rows, dims: list[int]) -> None:
        """``u = L'(w + z - w*)`` per account (a variable), the weighted tracking terms (the
        specific part ``|s * (w + z - w*)|^2`` straight on ``b - s``) and the tracking-error
        and VaR cones."""
        lay, col = self.layout, self.layout.columns
        F = int(lay.foff[-1])
        loads = np.concatenate([a.data.factor_load.ravel() for a in hh.accounts])
        sd = lay.stack(hh, "specific_sd")
        act = np.concatenate([a.data.w - a.data.target for a in hh.accounts])
        u0 = np.concatenate(
            [a.data.factor_load.T @ (a.data.w - a.data.target) for a in hh.accounts]
        )
        r = zero.new(F, u0)
        zero.add(r + np.arange(F), col.u + np.arange(F), np.ones(F))
        zero.add(*z_terms(col, r + lay.rep_factor, lay.rep_slot, -loads))
        c2 = np.array([hh.account_weight * a.data.gamma * a.share for a in hh.accounts])
        self._p_diag(col.u + np.arange(F), 2.0 * np.repeat(c2, np.diff(lay.foff)))
        self._z_square(np.repeat(c2, np.diff(lay.off)) * sd**2, act)
        for a, part in enumerate(hh.accounts):
            d = part.data
            te, var, _ = limits_of(d)
            td = tightened(d)
            slots = np.arange(lay.off[a], lay.off[a + 1])
            ucols = col.u + np.arange(lay.foff[a], lay.foff[a + 1])
            if te:
                self._risk_cone(
                    soc,
                    dims,
                    td.te_limit,
                    ucols,
                    np.zeros(len(ucols)),
                    slots,
                    sd[slots],
                    d.w - d.target,
                )
            if var:
                shift = d.factor_load.T @ d.target
                self._risk_cone(
                    soc, dims, td.var_limit / d.z_alpha, ucols, shift, slots, sd[slots], d.w
                )

    def _p_diag(self, cols: Idx, vals: Arr) -> None:
        self._P.append((cols, cols, vals))

    def _z_square(self, k: Arr, a0: Arr) -> None:
        """Add ``sum_i k_i (z_i + a0_i)^2`` (``z = b - s``) to the objective."""
        col, n = self.layout.columns, self.layout.N
        slots = np.arange(n)
        b, s = col.b + slots, col.s + slots
        self._P.append(
            (
                np.concatenate([b, s, b]),
                np.concatenate([b, s, s]),
                np.concatenate([2 * k, 2 * k, -2 * k]),
            )
        )
        self._q[b] += 2 * k * a0
        self._q[s] -= 2 * k * a0
        self._const += float(k @ a0**2)

    def _risk_cone(
        self,
        soc: Rows,
        dims: list[int],
        cap: float,
        ucols: Idx,
        ushift: Arr,
        slots: Idx,
        sd: Arr,
        a0: Arr,
    ) -> None:
        """``||(u + ushift, sd * (z + a0))|| <= cap`` over one account's slots."""
        col = self.layout.columns
        k, m = len(ucols), len(slots)
        r = soc.new(1 + k + m, np.concatenate([[cap], ushift, sd * a0]))
        soc.add(r + 1 + np.arange(k), ucols, -np.ones(k))
        rows = r + 1 + k + np.arange(m)
        soc.add(
            np.concatenate([rows, rows]),
            np.concatenate([col.b + slots, col.s + slots]),
            np.concatenate([-sd, sd]),
        )
        dims.append(1 + k + m)

    def _household_risk(self, hh: HouseholdData, zero: Rows, soc: Rows, dims: list[int]) -> None:
        """``hu = L_H' y + L_H'(x0 - x*)`` with ``y`` the household trade, ``gamma_H`` times
        ``|hu|^2 + |s_H * (y + x0 - x*)|^2`` and the household tracking-error cone."""
        assert hh.target is not None
        lay, col = self.layout, self.layout.columns
        N, k, n_h = lay.N, col.k_h, col.n_h
        active = hh.x_before() - hh.target
        share = np.repeat([a.share for a in hh.accounts], np.diff(lay.off))
        # y = household trade per instrument (fraction of H): sparse rows, one per instrument
        r = zero.new(n_h, 0.0)
        zero.add(r + np.arange(n_h), col.y + np.arange(n_h), np.ones(n_h))
        zero.add(*z_terms(col, r + lay.hh_idx, np.arange(N), -share))
        r = zero.new(k, hh.load.T @ active)
        zero.add(r + np.arange(k), col.hu + np.arange(k), np.ones(k))
        mm, ff = np.nonzero(np.ones((n_h, k)))
        zero.add(r + ff, col.y + mm, -hh.load[mm, ff])
        ycols = col.y + np.arange(n_h)
        self._p_diag(col.hu + np.arange(k), np.full(k, 2.0 * hh.gamma))
        k_y = hh.gamma * hh.spec**2
        self._p_diag(ycols, 2.0 * k_y)
        self._q[ycols] += 2.0 * k_y * active
        self._const += float(k_y @ active**2)
        if hh.te_limit is not None:
            r = soc.new(
                1 + k + n_h,
                np.concatenate([[household_te_limit(hh)], np.zeros(k), hh.spec * active]),
            )
            soc.add(r + 1 + np.arange(k), col.hu + np.arange(k), -np.ones(k))
            soc.add(r + 1 + k + np.arange(n_h), ycols, -hh.spec)
            dims.append(1 + k + n_h)

    # ------------------------------------------------------------------ solving
    def split(self, hh: HouseholdData, x: Arr) -> tuple[list[TradeVec], Arr]:
        """The stacked answer cut into one trade per account, and the transfers."""
        lay, col = self.layout, self.layout.columns
        buy = np.clip(x[col.b : col.b + lay.N], 0.0, None)
        lots = lay.unstack(hh, np.clip(x[col.l : col.l + lay.L], 0.0, None))
        out = [
            TradeVec(buy[lo:hi].copy(), lot)
            for lot, lo, hi in zip(lots, lay.off[:-1], lay.off[1:], strict=True)
        ]
        return out, np.clip(x[col.T : col.T + col.links], 0.0, None)

    def solve(self, chain: tuple[SolverName, ...]) -> _Solved:
        """Solve down ``chain``; returns status, solver, trade and solve time (ms)."""
        assert self.data is not None, "update() first"
        t0 = time.perf_counter()
        last = SolverName.CLARABEL
        for name in chain:
            out = solve_conic(self.data, name)
            if out is None:
                continue
            last = name
            status, x, value = out
            self.compiled = True
            if status is SolveStatus.INFEASIBLE:
                return status, name, None, (time.perf_counter() - t0) * 1e3
            if x is None:
                continue
            self.value = value / SCALE + self.constant
            trades, tr = self.split(self._hh, x)
            return status, name, HouseholdTrade(trades, tr), (time.perf_counter() - t0) * 1e3
        return SolveStatus.FAILED, last, None, (time.perf_counter() - t0) * 1e3
