"""The first solve of many accounts at once: one vmapped fast solve per size bucket.

:meth:`Recommender.analyze_many` prepares every request (checks, arrays), groups them by the
fast path's size bucket and runs their first solve (the convex relaxation with tightened risk
limits) through :meth:`FastSolver.solve_batch`; each account then continues alone. A failed
fast answer falls back down the chain for that account only, exactly as a single solve would.
Batch sizes are padded to powers of two (by repeating the last account; the copies' answers
are dropped) so that only a few batch sizes are ever compiled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from rebalancer.optimizer.data import ProblemData
from rebalancer.optimizer.enums import SolverName, SolveStatus
from rebalancer.optimizer.problem import CompiledProblem, SolveResult
from rebalancer.optimizer.schemas import AnalyzeRequest
from rebalancer.optimizer.terms.base import TradeVec

if TYPE_CHECKING:
    from rebalancer.optimizer.fast.solver import FastOutcome, FastSolver

Warm = tuple[TradeVec, float] | None
"""A fast answer and its proven optimality bound (bps of NAV): the next round's warm start."""
First = tuple[SolveResult, Warm]
"""An account's first solve and the warm start it leaves."""

log = structlog.get_logger(__name__)

MAX_BATCH = 32
"""Most accounts in one vmapped solve (larger groups are split)."""


@dataclass(slots=True)
class Prepared:
    """A checked request with its arrays, before any solve.

    ``tight`` is ``data`` with risk limits tightened by the most rounding can move them
    (it shares the bound arrays with ``data``); ``start`` is a ``time.perf_counter`` stamp.
    """

    request: AnalyzeRequest
    data: ProblemData
    tight: ProblemData
    prob: CompiledProblem
    cache_hit: bool
    start: float


def _pow2(k: int) -> int:
    size = 1
    while size < k:
        size *= 2
    return size


def _result(
    prep: Prepared,
    out: FastOutcome,
    chain: tuple[SolverName, ...],
    fast: FastSolver,
) -> SolveResult:
    """The engine's first result of one account from its share of a batch."""
    if out.trade is not None:
        prep.prob.fast_warm = (out.trade, out.t_final)
        return SolveResult(
            SolveStatus.OPTIMAL,
            SolverName.FAST,
            out.trade,
            out.iterations,
            out.solve_ms,
            out.value,
            [],
        )
    rest = chain[chain.index(SolverName.FAST) + 1 :]
    prep.prob.set_relaxed(set())
    if prep.prob.sector_share is not None:
        prep.prob.sector_share.point = None
    prep.prob.update(prep.tight)
    res = prep.prob.solve(prep.tight, rest, fast)
    res.fallbacks = [(SolverName.FAST, out.reason), *res.fallbacks]
    return res


def first_solves(
    fast: FastSolver, chain: tuple[SolverName, ...], preps: dict[int, Prepared]
) -> dict[int, First]:
    """First solve of every prepared account, batched per size bucket.

    Returns, per request index, the result and the fast warm start it leaves (to restore
    on the compiled problem before the account goes on). Accounts alone in their bucket, and
    buckets whose batch call raises, are left out (they are solved one by one).
    """
    from rebalancer.optimizer.fast.inputs import Bucket

    groups: dict[Bucket, list[int]] = {}
    for j, prep in preps.items():
        groups.setdefault(Bucket.of(prep.data.shape), []).append(j)
    done: dict[int, First] = {}
    for members in groups.values():
        for lo in range(0, len(members), MAX_BATCH):
            chunk = members[lo : lo + MAX_BATCH]
            if len(chunk) < 2:
                continue
            padded = chunk + [chunk[-1]] * (_pow2(len(chunk)) - len(chunk))
            probs = [preps[j].prob for j in padded]
            datas = [preps[j].tight for j in padded]
            try:
                outs, _, _ = fast.solve_batch(probs, datas)
            except Exception as exc:  # one by one instead: the single path reports failures
                log.warning("analyze_many.batch_failed", error=repr(exc), size=len(padded))
                continue
            for j, out in zip(chunk, outs, strict=False):
                prep = preps[j]
                prep.prob.fast_warm = None
                try:
                    res = _result(prep, out, chain, fast)
                except Exception as exc:  # this account is solved alone; its error is its own
                    log.warning("analyze_many.first_solve_failed", error=repr(exc))
                    continue
                done[j] = (res, prep.prob.fast_warm)
    return done
