"""Run Clarabel (or SCS) on the household's conic data."""

from __future__ import annotations

import clarabel
import numpy as np
import scs

from rebalancer.optimizer.enums import SolverName, SolveStatus
from rebalancer.optimizer.household.conic import Arr, ConicData

_CLARABEL_OK = {"Solved": SolveStatus.OPTIMAL, "AlmostSolved": SolveStatus.OPTIMAL_INACCURATE}
_CLARABEL_INFEASIBLE = {"PrimalInfeasible", "AlmostPrimalInfeasible"}
_SCS_OK = {"solved": SolveStatus.OPTIMAL, "solved_inaccurate": SolveStatus.OPTIMAL_INACCURATE}


def _clarabel(d: ConicData) -> tuple[SolveStatus, Arr | None, float]:
    cones = [clarabel.ZeroConeT(d.zero), clarabel.NonnegativeConeT(d.nonneg)]
    cones += [clarabel.SecondOrderConeT(m) for m in d.soc]
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    sol = clarabel.DefaultSolver(d.P, d.q, d.A, d.b, cones, settings).solve()
    status = str(sol.status).split(".")[-1]
    if status in _CLARABEL_INFEASIBLE:
        return SolveStatus.INFEASIBLE, None, 0.0
    if status not in _CLARABEL_OK:
        return SolveStatus.FAILED, None, 0.0
    return _CLARABEL_OK[status], np.asarray(sol.x, float), float(sol.obj_val)


def _scs(d: ConicData) -> tuple[SolveStatus, Arr | None, float]:
    data = {"P": d.P, "A": d.A, "b": d.b, "c": d.q}
    cone = {"z": d.zero, "l": d.nonneg, "q": list(d.soc)}
    sol = scs.SCS(data, cone, verbose=False, eps_abs=1e-7, eps_rel=1e-7, max_iters=20000).solve()
    status = str(sol["info"]["status"])
    if status.startswith("infeasible"):
        return SolveStatus.INFEASIBLE, None, 0.0
    if status not in _SCS_OK:
        return SolveStatus.FAILED, None, 0.0
    return _SCS_OK[status], np.asarray(sol["x"], float), float(sol["info"]["pobj"])


def solve_conic(d: ConicData, name: SolverName) -> tuple[SolveStatus, Arr | None, float] | None:
    """Status, primal ``x`` (None unless optimal) and objective; None for a solver this
    problem does not use (only CLARABEL and SCS)."""
    if name is SolverName.CLARABEL:
        return _clarabel(d)
    if name is SolverName.SCS:
        return _scs(d)
    return None
