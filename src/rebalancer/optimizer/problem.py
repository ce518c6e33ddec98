"""The compiled problem: the sum of the terms, built once per :class:`Shape`, solved many times.

Every number that changes between requests is a ``cp.Parameter`` and the problem is DPP, so
CVXPY canonicalizes it once; later solves only map new parameter values into solver data.
The objective is scaled by :data:`SCALE` (to basis points of NAV) for solver accuracy.
"""

from __future__ import annotations

import gc
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cvxpy as cp
import numpy as np

from rebalancer.optimizer.data import ProblemData, Shape
from rebalancer.optimizer.enums import SolverName, SolveStatus
from rebalancer.optimizer.terms import atoms
from rebalancer.optimizer.terms.base import Check, ConstraintTerm, CostTerm, TradeVec, Variables
from rebalancer.optimizer.terms.constraints import (
    AdvCap,
    BuyBounds,
    CashFloor,
    LongOnly,
    LotBounds,
    Turnover,
    WashSale,
)
from rebalancer.optimizer.terms.costs import (
    ActiveRisk,
    ImpactTerm,
    SpreadFeesTerm,
    TaxTerm,
    TrackingTerm,
)
from rebalancer.optimizer.terms.risk import (
    SectorRiskShare,
    StressLimit,
    TrackingErrorLimit,
    VarLimit,
)

if TYPE_CHECKING:
    from rebalancer.optimizer.fast.solver import FastSolver

SCALE = 1e4
"""Objective scale inside the solver (fraction of NAV -> bps)."""

_SOLVER_ARGS: dict[SolverName, dict[str, object]] = {
    SolverName.CLARABEL: {"solver": cp.CLARABEL},
    SolverName.SCS: {"solver": cp.SCS, "eps_abs": 1e-7, "eps_rel": 1e-7, "max_iters": 20000},
}
_STATUS = {
    cp.OPTIMAL: SolveStatus.OPTIMAL,
    cp.OPTIMAL_INACCURATE: SolveStatus.OPTIMAL_INACCURATE,
    cp.INFEASIBLE: SolveStatus.INFEASIBLE,
    cp.INFEASIBLE_INACCURATE: SolveStatus.INFEASIBLE,
}


OBJ_RTOL, OBJ_ATOL = 1e-3, 1e-7
"""How closely a solver's objective must match the NumPy recomputation (fraction of NAV)."""


def objective_agrees(mine: float, theirs: float) -> bool:
    """Whether a solver's objective ``theirs`` matches the NumPy value ``mine`` of its answer."""
    return abs(mine - theirs) <= OBJ_ATOL + OBJ_RTOL * abs(theirs)


@dataclass(slots=True)
class SolveResult:
    """Outcome of one pass down the solver chain."""

    status: SolveStatus
    solver: SolverName
    trade: TradeVec | None
    iterations: int = 0
    solve_time_ms: float = 0.0
    value: float | None = None
    """Solver objective (fraction of NAV)."""
    fallbacks: list[tuple[SolverName, str]] = field(default_factory=list)


class CompiledProblem:
    """All terms of one shape and the CVXPY problem built from them."""

    TRADING = (AdvCap, Turnover, CashFloor)

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        v = Variables(shape)
        self.vars = v
        self.risk = ActiveRisk(shape, v)
        self.costs: list[CostTerm] = [
            TrackingTerm(self.risk),
            SpreadFeesTerm(shape, v),
            ImpactTerm(shape, v),
            TaxTerm(shape, v),
        ]
        self.wash = WashSale()
        self.sector_share = SectorRiskShare(shape, v) if shape.budget_sectors else None
        self.limits: list[ConstraintTerm] = [
            CashFloor(v),
            Turnover(v),
            AdvCap(shape, v),
            BuyBounds(shape, v),
            LotBounds(shape, v),
            LongOnly(),
            self.wash,
            TrackingErrorLimit(self.risk),
            VarLimit(shape, self.risk),
        ]
        if shape.scenarios:
            self.limits.append(StressLimit(shape, v))
        if self.sector_share is not None:
            self.limits.append(self.sector_share)
        constraints = v.constraints + self.risk.constraints
        for term in self.limits:
            constraints += term.constraints
        objective = cp.Minimize(SCALE * atoms.sum_([c.expr for c in self.costs]))
        self.problem = cp.Problem(objective, constraints)
        if not self.problem.is_dpp():  # pragma: no cover - guarded by tests
            raise RuntimeError("optimizer problem is not DPP")
        self.compiled = False
        self.freeze_gc = True
        """Freeze the GC's objects after the first conic solve (the engine turns it off once
        its cache of shapes churns: an evicted frozen problem would never be collected)."""
        self.fast_warm: tuple[TradeVec, float] | None = None
        """Last fast-path answer of the current account (warm start of the next round)."""

    def update(self, data: ProblemData) -> None:
        """Copy one request's values into every parameter."""
        self.risk.update(data)
        for c in self.costs:
            c.update(data)
        for term in self.limits:
            term.update(data)

    def set_relaxed(self, names: set[str]) -> None:
        """Relax the constraint groups named (by ``ConstraintName`` value); others enforced."""
        for term in self.limits:
            term.relaxed = term.relaxable and term.name.value in names

    def parts(self, data: ProblemData, t: TradeVec) -> dict[str, float]:
        """Objective terms of ``t`` evaluated in NumPy (fractions of NAV)."""
        t = t.summed()
        return {c.label: c.value(data, t) for c in self.costs}

    def objective(self, data: ProblemData, t: TradeVec) -> float:
        return sum(self.parts(data, t).values())

    def checks(self, data: ProblemData, t: TradeVec, only: tuple[type, ...] = ()) -> list[Check]:
        """Every constraint evaluated in NumPy on ``t`` (or only the given term classes)."""
        out: list[Check] = []
        t = t.summed()
        for term in self.limits:
            if not only or isinstance(term, only):
                out += term.check(data, t)
        return out

    def solve(
        self,
        data: ProblemData,
        chain: tuple[SolverName, ...],
        fast: FastSolver | None = None,
        wait: bool = True,
    ) -> SolveResult:
        """Solve with the first solver of ``chain`` that answers; record every fallback.

        :attr:`SolverName.FAST` runs ``fast`` on the same parameter values; it answers only
        with a converged answer that passes the NumPy checks, else the chain goes on. With
        ``wait=False`` it never waits for a compile: a bucket not compiled yet falls back
        ("fast path compiling bucket ...") and is compiled in the background.
        """
        fallbacks: list[tuple[SolverName, str]] = []
        for name in chain:
            if name is SolverName.HEURISTIC:
                break
            if name is SolverName.FAST:
                if fast is None:
                    fallbacks.append((name, "no fast solver configured"))
                    continue
                out = fast.solve(self, data, self.fast_warm, wait=wait)
                if out.trade is None:
                    fallbacks.append((name, out.reason))
                    continue
                self.fast_warm = (out.trade, out.t_final)
                return SolveResult(
                    SolveStatus.OPTIMAL,
                    name,
                    out.trade,
                    out.iterations,
                    out.solve_ms,
                    out.value,
                    fallbacks,
                )
            t0 = time.perf_counter()
            try:
                with warnings.catch_warnings():  # inaccuracy is recorded in the status instead
                    warnings.simplefilter("ignore")
                    self.problem.solve(**_SOLVER_ARGS[name])  # type: ignore[arg-type,no-untyped-call]
            except (cp.SolverError, ValueError, ArithmeticError) as exc:
                fallbacks.append((name, f"solver error: {exc}"[:300]))
                continue
            if not self.compiled:
                # CVXPY's canonicalization of this shape is long-lived: keep it out of the
                # garbage collector's full collections (the engine's P99; docs/optimizer.md)
                if self.freeze_gc:
                    gc.freeze()
                self.compiled = True
            elapsed = (time.perf_counter() - t0) * 1e3
            status = _STATUS.get(self.problem.status, SolveStatus.FAILED)
            stats = self.problem.solver_stats
            iters = int(stats.num_iters or 0) if stats is not None else 0
            if status is SolveStatus.INFEASIBLE:
                return SolveResult(status, name, None, iters, elapsed, None, fallbacks)
            if status is SolveStatus.FAILED or self.vars.buy.value is None:
                fallbacks.append((name, f"status {self.problem.status}"))
                continue
            buy = np.clip(np.asarray(self.vars.buy.value, dtype=float), 0.0, data.buy_ub)
            lot = np.clip(np.asarray(self.vars.lot_sell.value, dtype=float), 0.0, data.lot_ub)
            value = float(self.problem.value) / SCALE
            trade = TradeVec(buy, lot)
            if status is SolveStatus.OPTIMAL_INACCURATE and not objective_agrees(
                self.objective(data, trade), value
            ):
                fallbacks.append(
                    (name, f"status {self.problem.status}: objective disagrees with NumPy")
                )
                continue
            return SolveResult(status, name, trade, iters, elapsed, value, fallbacks)
        return SolveResult(SolveStatus.FAILED, SolverName.HEURISTIC, None, 0, 0.0, None, fallbacks)
