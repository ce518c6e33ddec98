"""The household problem: one CVXPY problem over every account's trades, built once per
structure (account shapes, instrument map, links) with ``cp.Parameter`` and solved many times.

Objective (fractions of household NAV ``H``, ``s_a = NAV_a / H``)::

    sum_a s_a * [ lambda * tracking_a + spread_a + impact_a + tax_a ]       account terms
    + gamma_H * (x - x*)' Sigma_H (x - x*)                                   household tracking
    + sum_{a taxable} s_a * horizon * drag' (w_a + z_a)                     asset location
    + transfer_cost * sum_l T_l                                             cash moved

with ``x = sum_a s_a M_a (w_a + z_a)`` the household weights. The account terms are the
single-account terms of :mod:`rebalancer.optimizer.terms`, reused as they are: their parameter
values are scaled by ``s_a`` (each is linear in its one parameter), so the problem stays DPP.
The tracking terms fold their weights into their parameters (see :class:`ScaledActiveRisk`).
Constraints hold per account: buy and lot bounds (long only), ADV caps, turnover, and the cash
floor with the account's net transfer ``(in - out) / s_a`` (zero without links).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

from rebalancer.optimizer.data import ProblemData
from rebalancer.optimizer.enums import SolverName, SolveStatus
from rebalancer.optimizer.household.data import AccountPart, Arr, HouseholdData
from rebalancer.optimizer.problem import SCALE
from rebalancer.optimizer.terms import atoms
from rebalancer.optimizer.terms.base import (
    Check,
    ConstraintTerm,
    CostTerm,
    TradeVec,
    Variables,
    sigma_times,
)
from rebalancer.optimizer.terms.constraints import (
    AdvCap,
    BuyBounds,
    CashFloor,
    LongOnly,
    LotBounds,
    Turnover,
)
from rebalancer.optimizer.terms.costs import ImpactTerm, SpreadFeesTerm, TaxTerm

DPP_MAX_VARIABLES = 3000
"""Above this many trade variables the compiled (DPP) form is not used: CVXPY's parameter
tensor grows with (parameter entries) x (constraint rows), both linear in the number of
accounts, so a 10 x 500 household would need tens of GB. Such problems are canonicalized from
the current values on each solve instead (memory linear, seconds per solve)."""

_SOLVERS: dict[SolverName, dict[str, object]] = {
    SolverName.CLARABEL: {"solver": cp.CLARABEL},
    SolverName.SCS: {"solver": cp.SCS, "eps_abs": 1e-7, "eps_rel": 1e-7, "max_iters": 20000},
}


def structure_key(hh: HouseholdData) -> tuple[object, ...]:
    """What the compiled problem depends on (everything else is a parameter value)."""
    return (
        tuple((a.data.n, a.data.lot_w.shape[1], a.data.factor_load.shape[1]) for a in hh.accounts),
        tuple(tuple(int(i) for i in a.idx) for a in hh.accounts),
        len(hh.ids),
        hh.load.shape[1],
        tuple(hh.links),
        hh.target is not None,
        hh.account_weight > 0,
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


class ScaledActiveRisk:
    """``c^2 (w + z - w*)' Sigma (w + z - w*)`` with ``c^2`` folded into the parameters.

    ``u = c L'(w + z - w*)``, ``v = c s * (w + z - w*)`` and the term is ``|u|^2 + |v|^2``:
    no parameter multiplies a quadratic, so CVXPY's parameter tensor of the quadratic part
    stays constant (a parameter there makes canonicalization grow with the square of the
    number of variables, i.e. of accounts).
    """

    def __init__(self, n: int, k: int, z: cp.Expression) -> None:
        self.load = cp.Parameter((n, k), name="scaled_load")
        self.sd = cp.Parameter(n, nonneg=True, name="scaled_sd")
        self.u0 = cp.Parameter(k, name="scaled_factor0")
        self.v0 = cp.Parameter(n, name="scaled_specific0")
        u, v = cp.Variable(k, name="active_factor"), cp.Variable(n, name="active_specific")
        self.constraints: list[cp.Constraint] = [
            u == self.load.T @ z + self.u0,
            v == atoms.multiply(self.sd, z) + self.v0,
        ]
        self.expr = atoms.sum_squares(u) + atoms.sum_squares(v)

    def update(self, load: Arr, sd: Arr, active: Arr, weight: float) -> None:
        """``weight = c^2`` (e.g. gamma times NAV share), ``active = w - w*``."""
        c = float(np.sqrt(max(weight, 0.0)))
        self.load.value = c * load
        self.sd.value = c * sd
        self.u0.value = c * (load.T @ active)
        self.v0.value = c * sd * active


class AccountTerms:
    """The single-account terms of one account, its variables and its checks."""

    def __init__(self, data: ProblemData, tracking: bool, links: list[tuple[int, int]], pos: int):
        shape = data.shape
        self.vars = Variables(shape)
        v = self.vars
        self.risk = ScaledActiveRisk(shape.n, shape.factors, v.z) if tracking else None
        self.spread = SpreadFeesTerm(shape, v)
        self.impact = ImpactTerm(shape, v)
        self.tax = TaxTerm(shape, v)
        self.costs: list[CostTerm] = [self.spread, self.impact, self.tax]
        self.limits: list[ConstraintTerm] = [
            Turnover(v),
            AdvCap(shape, v),
            BuyBounds(shape, v),
            LotBounds(shape, v),
            LongOnly(),
        ]
        self.cash = CashFloor(v)
        """Evaluates the cash floor on transfer-adjusted data (its own constraint is unused)."""
        self.room = cp.Parameter(name="cash_room")
        self.inv_share = cp.Parameter(nonneg=True, name="inv_share")
        self.incidence = np.array([(dst == pos) - (src == pos) for src, dst in links], float)
        self.loc = cp.Parameter(shape.n, name="location")

    def constraints(self, transfers: cp.Variable | None) -> list[cp.Constraint]:
        v = self.vars
        out = list(v.constraints)
        if self.risk is not None:
            out += self.risk.constraints
        for term in self.limits:
            out += term.constraints
        spend = atoms.sum_(v.buy) - atoms.sum_(v.sell)
        if transfers is not None and self.incidence.any():
            spend = spend - self.inv_share * (self.incidence @ transfers)
        out.append(spend <= self.room)
        return out

    def objective(self) -> list[cp.Expression]:
        terms = [c.expr for c in self.costs] + [self.loc @ self.vars.z]
        if self.risk is not None:
            terms.append(self.risk.expr)
        return terms

    def update(self, a: AccountPart, weight: float, horizon: float) -> None:
        d = a.data
        if self.risk is not None:
            self.risk.update(
                d.factor_load, d.specific_sd, d.w - d.target, d.gamma * a.share * weight
            )
        for c in self.costs:
            c.update(d)
        for p in (self.spread.rate, self.impact.coef, self.tax.rate):
            p.value = np.asarray(p.value) * a.share
        for term in self.limits:
            term.update(d)
        self.room.value = d.cash / d.nav - d.cash_floor
        self.inv_share.value = 1.0 / a.share
        self.loc.value = a.share * horizon * a.drag

    def parts(self, data: ProblemData, t: TradeVec) -> dict[str, float]:
        """Account-level terms in fractions of the account NAV (unscaled, as one account)."""
        out = {c.label: c.value(data, t) for c in self.costs}
        a = data.w + t.z - data.target
        out["tracking"] = data.gamma * float(a @ sigma_times(data, a))
        return out

    def checks(self, data: ProblemData, t: TradeVec, only: tuple[type, ...] = ()) -> list[Check]:
        """Every per-account constraint in NumPy; ``data.cash`` must include net transfers."""
        out: list[Check] = []
        for term in [*self.limits, self.cash]:
            if not only or isinstance(term, only):
                out += term.check(data, t)
        return out


class HouseholdProblem:
    """All accounts' terms and the household terms of one structure."""

    def __init__(self, hh: HouseholdData) -> None:
        self.key = structure_key(hh)
        self.accounts = [
            AccountTerms(a.data, hh.account_weight > 0, hh.links, n)
            for n, a in enumerate(hh.accounts)
        ]
        nl = len(hh.links)
        self.transfers = cp.Variable(nl, nonneg=True, name="transfers") if nl else None
        self.link_cap = cp.Parameter(nl, nonneg=True, name="link_cap") if nl else None
        self.transfer_cost = cp.Parameter(nonneg=True, name="transfer_cost")
        constraints: list[cp.Constraint] = []
        for acct in self.accounts:
            constraints += acct.constraints(self.transfers)
        terms: list[cp.Expression] = [e for acct in self.accounts for e in acct.objective()]
        if self.transfers is not None and self.link_cap is not None:
            constraints.append(self.transfers <= self.link_cap)
            terms.append(self.transfer_cost * atoms.sum_(self.transfers))
        self.loads: list[cp.Parameter] = []
        self.specs: list[cp.Parameter] = []
        self.u0 = cp.Parameter(hh.load.shape[1], name="household_factor0")
        self.v0 = cp.Parameter(len(hh.ids), name="household_specific0")
        if hh.target is not None:
            n_h, k = len(hh.ids), hh.load.shape[1]
            u_sum: cp.Expression = self.u0
            v_sum: cp.Expression = self.v0
            for a, acct in zip(hh.accounts, self.accounts, strict=True):
                load = cp.Parameter((a.data.n, k), name="household_load")
                spec = cp.Parameter(a.data.n, nonneg=True, name="household_spec")
                self.loads.append(load)
                self.specs.append(spec)
                m = sp.csr_matrix(
                    (np.ones(a.data.n), (a.idx, np.arange(a.data.n))), shape=(n_h, a.data.n)
                )
                u_sum = u_sum + load.T @ acct.vars.z
                v_sum = v_sum + m @ atoms.multiply(spec, acct.vars.z)
            u = cp.Variable(k, name="household_u")
            v = cp.Variable(n_h, name="household_v")
            constraints += [u == u_sum, v == v_sum]
            terms.append(atoms.sum_squares(u) + atoms.sum_squares(v))
        self.problem = cp.Problem(cp.Minimize(SCALE * atoms.sum_(terms)), constraints)
        size = sum(a.data.n * (a.data.lot_w.shape[1] + 3) for a in hh.accounts)
        self.ignore_dpp = size > DPP_MAX_VARIABLES
        """Large households are canonicalized afresh on every solve (see DPP_MAX_VARIABLES)."""
        if not self.problem.is_dpp():  # pragma: no cover - guarded by tests
            raise RuntimeError("household problem is not DPP")
        self.compiled = False

    def update(self, hh: HouseholdData) -> None:
        """Copy one household's values into every parameter."""
        for a, acct in zip(hh.accounts, self.accounts, strict=True):
            acct.update(a, hh.account_weight, hh.horizon)
        if self.link_cap is not None:
            self.link_cap.value = hh.link_cap
        self.transfer_cost.value = hh.transfer_cost
        if hh.target is not None:
            c = float(np.sqrt(hh.gamma))
            active = hh.x_before() - hh.target
            self.u0.value = c * (hh.load.T @ active)
            self.v0.value = c * hh.spec * active
            for a, load, spec in zip(hh.accounts, self.loads, self.specs, strict=True):
                load.value = c * a.share * hh.load[a.idx]
                spec.value = c * a.share * hh.spec[a.idx]

    def solve(self, chain: tuple[SolverName, ...]) -> _Solved:
        """Solve down ``chain``; returns status, solver, trade and solve time (ms)."""
        t0 = time.perf_counter()
        last = SolverName.CLARABEL
        for name in chain:
            if name not in _SOLVERS:
                continue
            last = name
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self.problem.solve(  # type: ignore[no-untyped-call]
                        ignore_dpp=self.ignore_dpp,
                        **_SOLVERS[name],  # type: ignore[arg-type]
                    )
            except (cp.SolverError, ValueError, ArithmeticError):
                continue
            self.compiled = True
            status = self.problem.status
            if status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
                return SolveStatus.INFEASIBLE, name, None, (time.perf_counter() - t0) * 1e3
            if status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
                continue
            trades = []
            for acct in self.accounts:
                buy = np.clip(np.asarray(acct.vars.buy.value, float), 0.0, None)
                lot = np.clip(np.asarray(acct.vars.lot_sell.value, float), 0.0, None)
                trades.append(TradeVec(buy, lot))
            tr = np.zeros(0)
            if self.transfers is not None:
                tr = np.clip(np.asarray(self.transfers.value, float), 0.0, None)
            st = SolveStatus.OPTIMAL if status == cp.OPTIMAL else SolveStatus.OPTIMAL_INACCURATE
            return st, name, HouseholdTrade(trades, tr), (time.perf_counter() - t0) * 1e3
        return SolveStatus.FAILED, last, None, (time.perf_counter() - t0) * 1e3
