"""Reading a fast-path answer: the barrier path's answer in the interior-point layout, and the
NumPy checks a converged answer must pass before the engine takes it."""

from __future__ import annotations

from typing import Any

import numpy as np

from rebalancer.optimizer.data import ProblemData
from rebalancer.optimizer.fast import start
from rebalancer.optimizer.fast.pdip import Solution
from rebalancer.optimizer.terms.base import Check, ConstraintTerm, TradeVec
from rebalancer.optimizer.terms.constraints import WashSale
from rebalancer.optimizer.terms.risk import SectorRiskShare


def from_barrier(sol: start.Solution) -> tuple[Solution, str]:
    """A barrier-path answer in the interior-point path's layout, and why it failed ("" when
    it converged). ``bound`` carries the barrier parameter ``t`` reached (the warm start's)."""
    reason = ""
    if not bool(sol.start_ok):
        reason = "no strictly feasible starting point found (barrier path, risk cones)"
    elif not bool(sol.converged):
        reason = (
            f"barrier path not converged after {int(sol.iterations)} iterations "
            f"(min relative slack {float(sol.slack):.3g}, stalls {int(sol.stalls)})"
        )
    out = Solution(
        x=np.swapaxes(np.asarray(sol.x), -1, -2),
        objective=sol.objective,
        iterations=sol.newton,
        converged=sol.converged,
        bound=sol.t,
        perr=np.zeros_like(np.asarray(sol.t)),
        warm_used=sol.warm_used,
    )
    return out, reason


def convex_terms(prob: Any) -> list[ConstraintTerm]:
    """The limits of ``prob`` the convex problem encodes as given (the wash-sale rule and the
    exact sector risk shares are settled by the engine's rounds; relaxed limits are off while
    diagnosing)."""
    # exact classes (no subclasses exist): a tuple lookup instead of two ABC isinstance calls
    return [t for t in prob.limits if not t.relaxed and type(t) not in (WashSale, SectorRiskShare)]


def first_broken(prob: Any, data: ProblemData, trade: TradeVec) -> Check | None:
    """The first NumPy check of :func:`convex_terms` that ``trade`` breaks (``None``: all
    hold). ``trade`` may be :meth:`TradeVec.summed` (same values). Each group first tries
    :meth:`ConstraintTerm.clearly_holds`, which builds no checks."""
    for term in convex_terms(prob):
        if not term.clearly_holds(data, trade):
            for c in term.check(data, trade):
                if not c.holds():
                    return c
    return None
