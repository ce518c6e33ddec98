"""The recommendation engine: solve, refine, round, re-check, decide."""

from __future__ import annotations

import dataclasses
import gc
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from rebalancer.domain.errors import ValidationFailed
from rebalancer.optimizer import wash
from rebalancer.optimizer.batch import First, Prepared, first_solves
from rebalancer.optimizer.data import BIG, ProblemData, Shape, build_data
from rebalancer.optimizer.diagnose import infeasible_error
from rebalancer.optimizer.enums import Decision, SolverName, SolveStatus
from rebalancer.optimizer.gc_pause import gc_pause
from rebalancer.optimizer.heuristic import heuristic_trade
from rebalancer.optimizer.problem import CompiledProblem, SolveResult, objective_agrees
from rebalancer.optimizer.report import Outcome, build_response
from rebalancer.optimizer.rounding import Shares, repair, round_shares
from rebalancer.optimizer.schemas import AnalyzeRequest, AnalyzeResponse
from rebalancer.optimizer.terms.base import TradeVec
from rebalancer.optimizer.terms.risk import (
    SectorRiskShare,
    StressLimit,
    TrackingErrorLimit,
    VarLimit,
    sector_shares,
)
from rebalancer.optimizer.validation import check_request

if TYPE_CHECKING:
    from rebalancer.optimizer.fast.solver import FastSolver

DEFAULT_CHAIN = (SolverName.CLARABEL, SolverName.SCS, SolverName.HEURISTIC)
FAST_CHAIN = (SolverName.FAST, *DEFAULT_CHAIN)
"""The JAX fast path first, the conic reference as fallback (see docs/optimizer.md)."""
_WASH_TOL = 1e-7
_MAX_ROUNDS = 5
_RISK_TERMS = (TrackingErrorLimit, VarLimit, StressLimit, SectorRiskShare)


def tightened(data: ProblemData) -> ProblemData:
    """Risk limits tightened by the most rounding can move them (so rounding keeps them)."""
    eps = data.lot_size * data.price / (2.0 * data.nav)
    sd_i = np.sqrt((data.factor_load**2).sum(axis=1) + data.specific_sd**2)
    m = float(eps @ sd_i)
    stress_m = np.abs(data.stress_returns) @ eps

    def tight(limit: float | np.ndarray, margin: float | np.ndarray) -> np.ndarray:
        lim = np.asarray(limit, dtype=float)
        return np.where(lim >= BIG, lim, np.maximum(lim - margin, 0.5 * lim))

    return dataclasses.replace(
        data,
        te_limit=float(tight(data.te_limit, m)),
        var_limit=float(tight(data.var_limit, data.z_alpha * m)),
        stress_limit=tight(data.stress_limit, stress_m),
    )


def _restore(data: ProblemData, bounds: tuple[np.ndarray, np.ndarray]) -> None:
    """Put back the buy and lot bounds saved by :meth:`Recommender._solve_refined` (in place:
    the tightened copy of the data shares these arrays with the request's own)."""
    data.buy_ub[:] = bounds[0]
    data.lot_ub[:] = bounds[1]


class Recommender:
    """Reusable engine holding compiled problems keyed by shape (one per worker process).

    Parameters
    ----------
    solvers
        The fallback chain, tried in order; :attr:`SolverName.HEURISTIC` last means a safe
        heuristic answers when every solver fails.
    cache_size
        Most compiled shapes kept (least recently used are dropped).
    fast
        The fast-path solver used when ``solvers`` contains :attr:`SolverName.FAST` (one is
        created when omitted; share one to share its compiled functions).
    wait_for_compile
        Whether a request may wait for the fast path to compile its size bucket (13-16 s
        cold). ``False`` (the service): a bucket not compiled yet is queued for a background
        compile and the rest of the chain answers at once, with the reason in
        ``solver.fallbacks``; ``analyze_many`` then solves one account at a time (each batch
        size would compile too).
    """

    def __init__(
        self,
        solvers: tuple[SolverName, ...] = DEFAULT_CHAIN,
        cache_size: int = 32,
        fast: FastSolver | None = None,
        wait_for_compile: bool = True,
    ) -> None:
        self.solvers = tuple(solvers)
        self.cache_size = cache_size
        self.wait_for_compile = wait_for_compile
        self._cache: OrderedDict[Shape, CompiledProblem] = OrderedDict()
        self._evicted = False
        if fast is None and SolverName.FAST in self.solvers:
            from rebalancer.optimizer.fast.solver import FastSolver

            fast = FastSolver()
        self.fast = fast

    def problem_for(self, shape: Shape) -> tuple[CompiledProblem, bool]:
        """The compiled problem of ``shape`` and whether it came from the cache."""
        prob = self._cache.get(shape)
        if prob is not None:
            self._cache.move_to_end(shape)
            return prob, prob.compiled
        prob = CompiledProblem(shape)
        # A compiled shape is long-lived: keep it out of the GC's full collections. Only while
        # the cache has room: a frozen problem evicted later is never collected if it holds
        # reference cycles, so freezing stops once shapes churn (at most ``cache_size`` kept).
        prob.freeze_gc = not self._evicted and len(self._cache) < self.cache_size
        if prob.freeze_gc:
            gc.freeze()
        self._cache[shape] = prob
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
            self._evicted = True
        return prob, False

    def analyze(self, request: AnalyzeRequest) -> AnalyzeResponse:
        """Recommend trades for one account.

        Raises
        ------
        InvalidInput
            The request breaks a rule relating several fields.
        InfeasibleRebalance
            The limits cannot all hold; ``fields`` names the conflicting ones.
        ValidationFailed
            The independent NumPy re-check of the rounded answer found a violation.
        """
        with gc_pause:
            return self._finish(self._prepare(request), None)

    def analyze_many(
        self, requests: Sequence[AnalyzeRequest], batched: bool = True
    ) -> list[AnalyzeResponse | Exception]:
        """Answer many accounts; slot ``j`` holds the answer of ``requests[j]`` or its error.

        With :attr:`SolverName.FAST` first in the chain, the first solve of all requests of one
        size bucket runs as one vmapped :meth:`FastSolver.solve_batch` call; each request then
        goes on alone (wash-sale and sector rounds, rounding, checks, report), exactly as
        :meth:`analyze` would. A request that fails (``InvalidInput``,
        ``InfeasibleRebalance``, ``ValidationFailed`` or an unexpected exception) yields the
        exception in its slot; the others are answered. ``batched=False`` skips the vmapped
        first solve (same answers; on a 2-core CPU the batch is not faster, see
        docs/optimizer.md).
        """
        out: list[AnalyzeResponse | Exception | None] = [None] * len(requests)
        preps: dict[int, Prepared] = {}
        for j, req in enumerate(requests):
            try:
                with gc_pause:
                    preps[j] = self._prepare(req)
            except Exception as exc:  # isolated per request, returned to the caller
                out[j] = exc
        firsts: dict[int, First] = {}
        fast_first = self.solvers[:1] == (SolverName.FAST,)
        batchable = batched and self.wait_for_compile and len(preps) > 1
        if batchable and self.fast is not None and fast_first:
            firsts = first_solves(self.fast, self.solvers, preps)
        for j, prep in preps.items():
            try:
                with gc_pause:
                    out[j] = self._finish(prep, firsts.get(j))
            except Exception as exc:  # isolated per request, returned to the caller
                out[j] = exc
        return [r for r in out if r is not None]

    def _prepare(self, request: AnalyzeRequest) -> Prepared:
        """Check the request and build its arrays and tightened arrays (no solve yet)."""
        start = time.perf_counter()
        data = build_data(request, check_request(request))
        prob, hit = self.problem_for(data.shape)
        return Prepared(request, data, tightened(data), prob, hit, start)

    def _finish(self, prep: Prepared, first: First | None) -> AnalyzeResponse:
        """Solve (``first``: the first solve's result and warm start when it ran already),
        refine, round, re-check and render one account."""
        data, prob = prep.data, prep.prob
        prob.set_relaxed(set())
        prob.fast_warm = None if first is None else first[1]
        if prob.sector_share is not None:
            prob.sector_share.point = None
        messages: list[str] = []
        res, solves = self._solve_with_retries(
            prob, prep, messages, None if first is None else first[0]
        )
        trade = res.trade
        if trade is None:
            trade = heuristic_trade(data, prob)
            res.status, res.solver = SolveStatus.HEURISTIC, SolverName.HEURISTIC
        else:
            self._check_objective(prob, data, trade, res.value)
        shares = self._round(prob, data, trade)
        final = shares.trade(data).summed()
        final_checks = prob.checks(data, final)
        bad = [c for c in final_checks if not c.holds()]
        if bad:
            c = bad[0]
            raise ValidationFailed(
                f"the rounded answer breaks {c.name.value}"
                f"{' of ' + c.subject if c.subject else ''}: "
                f"value {c.value:.6g}, limit {c.limit:.6g}",
                list(c.fields),
            )
        zero = TradeVec.zero(data.shape)
        p0, p1 = prob.parts(data, zero), prob.parts(data, final)
        benefit = (sum(p0.values()) - sum(p1.values())) * data.nav
        traded = bool((shares.buy > 0).any() or (shares.lot > 0).any())
        decision = Decision.REBALANCE
        # the checks of not trading matter only when not trading may be the answer
        small = benefit <= data.min_net_benefit
        zero_checks = prob.checks(data, zero) if small or not traded else []
        if not traded or (small and all(c.holds() for c in zero_checks)):
            decision = Decision.NO_TRADE
            if traded:
                messages.append(
                    f"net benefit {benefit:,.2f} is at or below policy.min_net_benefit "
                    f"{data.min_net_benefit:,.2f}"
                )
            shares = Shares(np.zeros_like(shares.buy), np.zeros_like(shares.lot))
            final_checks, p1, final = zero_checks, p0, zero
        outcome = Outcome(
            decision=decision,
            shares=shares,
            result=res,
            solves=solves,
            cache_hit=prep.cache_hit,
            total_ms=(time.perf_counter() - prep.start) * 1e3,
            messages=messages,
            checks=final_checks,
            parts=(p0, p1),
            final=final,
        )
        return build_response(prep.request, data, prob, outcome)

    def relaxed_objective(self, request: AnalyzeRequest) -> float:
        """Optimal objective of the continuous problem before rounding (fraction of NAV).

        Useful to compare with an independent formulation; raises like :meth:`analyze`.
        """
        data = build_data(request, check_request(request))
        prob, _ = self.problem_for(data.shape)
        prob.set_relaxed(set())
        prob.fast_warm = None
        if prob.sector_share is not None:
            prob.sector_share.point = None
        res, _ = self._solve_refined(prob, data)
        if res.trade is None:
            raise infeasible_error(prob, data, self.solvers)
        return prob.objective(data, res.trade)

    def _solve_with_retries(
        self,
        prob: CompiledProblem,
        prep: Prepared,
        messages: list[str],
        first: SolveResult | None = None,
    ) -> tuple[SolveResult, int]:
        data = prep.data
        res, solves = self._solve_refined(prob, prep.tight, first)
        if res.status is SolveStatus.INFEASIBLE:
            more, k = self._solve_refined(prob, data)
            res, solves = more, solves + k
        if res.status is SolveStatus.INFEASIBLE and data.deferred:
            for d in data.deferred:
                i = data.ids.index(d.instrument)
                j = data.lot_ids[i].index(d.lot_id)
                data.lot_ub[i, j] = data.lot_w[i, j]
            messages.append("lots turning long-term soon were released: the limits need them")
            data.deferred.clear()
            more, k = self._solve_refined(prob, data)
            res, solves = more, solves + k
        if res.status is SolveStatus.INFEASIBLE:
            raise infeasible_error(prob, data, self.solvers)
        return res, solves

    def _solve_refined(
        self, prob: CompiledProblem, data: ProblemData, first: SolveResult | None = None
    ) -> tuple[SolveResult, int]:
        """Solve (or take ``first``, the first solve already run on ``data``), then re-solve
        to settle wash-sale conflicts and sector risk budgets.

        Settling closes one side of each wash-sale group by objective; when that leaves no
        feasible answer (it closed loss sales a cash floor needs, say), the sides are chosen
        again by each group's net trade in the first answer (:func:`wash.settle_by_net`).
        An answer that stays infeasible leaves ``data``'s bounds as they came in, so a retry
        (untightened limits, released lots) starts from the request's own bounds.
        """
        prob.update(data)
        bounds = (data.buy_ub.copy(), data.lot_ub.copy())
        wait = self.wait_for_compile
        res = first if first is not None else prob.solve(data, self.solvers, self.fast, wait)
        relaxed = res.trade
        res, solves = self._settle_rounds(prob, data, res)
        if res.trade is None and relaxed is not None and solves > 1:
            _restore(data, bounds)
            wash.settle_by_net(data, relaxed, _WASH_TOL)
            prob.update(data)
            res, more = self._settle_rounds(
                prob, data, prob.solve(data, self.solvers, self.fast, wait)
            )
            solves += more
        if res.trade is None:
            _restore(data, bounds)
        return res, solves

    def _settle_rounds(
        self, prob: CompiledProblem, data: ProblemData, res: SolveResult
    ) -> tuple[SolveResult, int]:
        """Re-solve after ``res`` until no wash-sale conflict and no sector over its budget is
        left; returns the last result and the solves counted (``res``'s included)."""
        wait = self.wait_for_compile
        solves = 1
        for _ in range(_MAX_ROUNDS):
            if res.trade is None:
                break
            changed = False
            if prob.wash.conflicts(data, res.trade, _WASH_TOL):
                wash.settle_all(data, res.trade, _WASH_TOL)
                changed = True
            if prob.sector_share is not None:
                shares = sector_shares(data, data.w + res.trade.z)
                if (shares > data.budget_share + 1e-7).any():
                    prob.sector_share.linearize(data, data.w + res.trade.z)
                    changed = True
            if not changed:
                break
            prob.update(data)
            res = prob.solve(data, self.solvers, self.fast, wait)
            solves += 1
        if res.trade is not None and prob.wash.conflicts(data, res.trade, _WASH_TOL):
            wash.fix_directions(data, res.trade, _WASH_TOL)
            prob.update(data)
            res = prob.solve(data, self.solvers, self.fast, wait)
            solves += 1
        return res, solves

    def _check_objective(
        self, prob: CompiledProblem, data: ProblemData, t: TradeVec, theirs: float | None
    ) -> None:
        """The solver's objective must match the NumPy recomputation of its own answer."""
        if theirs is None:
            return
        mine = prob.objective(data, t)
        if not objective_agrees(mine, theirs):
            raise ValidationFailed(
                f"the solver's objective {theirs:.8g} disagrees with the NumPy recomputation "
                f"{mine:.8g}",
                [],
            )

    def _round(self, prob: CompiledProblem, data: ProblemData, t: TradeVec) -> Shares:
        shares = round_shares(data, t, data.min_trade_value)

        def trading(x: TradeVec) -> list:  # type: ignore[type-arg]
            return prob.checks(data, x, CompiledProblem.TRADING)

        def risk(x: TradeVec) -> list:  # type: ignore[type-arg]
            return prob.checks(data, x, _RISK_TERMS)

        return repair(data, shares, t, trading, risk)
