"""Reading a fast-path answer: the NumPy checks a converged answer must pass before the engine
takes it."""

from __future__ import annotations

from typing import Any

from rebalancer.optimizer.data import ProblemData
from rebalancer.optimizer.terms.base import Check, ConstraintTerm, TradeVec
from rebalancer.optimizer.terms.constraints import WashSale
from rebalancer.optimizer.terms.risk import SectorRiskShare


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
