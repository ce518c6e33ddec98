"""The fast path's entry point: compiled barrier solves cached per size bucket.

:class:`FastSolver` compiles one function per :class:`~.inputs.Bucket` (and one per batch size
for :meth:`FastSolver.solve_batch`), records each compile time separately from solve times,
and turns a solution into the engine's :class:`SolveResult` after checking it with the same
NumPy terms that re-check every answer. Anything short of a converged, strictly feasible
answer whose objective matches the NumPy recomputation is reported as a failure with the
reason, so the engine falls back to the conic solver.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from rebalancer.optimizer.data import ProblemData
from rebalancer.optimizer.fast.barrier import Settings
from rebalancer.optimizer.fast.inputs import Bucket, assemble, trade_from, warm_from
from rebalancer.optimizer.fast.start import Solution, solve_padded
from rebalancer.optimizer.terms.base import Arr, Check, TradeVec
from rebalancer.optimizer.terms.constraints import WashSale
from rebalancer.optimizer.terms.risk import SectorRiskShare

_OBJ_RTOL, _OBJ_ATOL = 1e-6, 1e-9
_WARM_T_FACTOR = 1e-3


@dataclass(slots=True)
class FastOutcome:
    """A fast solve: the trade (``None`` on failure), why it failed, and timings."""

    trade: TradeVec | None
    reason: str
    iterations: int
    solve_ms: float
    compile_ms: float
    value: float | None
    t_final: float
    warm_used: bool


def _spec(b: Bucket, batch: int | None) -> tuple[dict[str, Any], Any, Any, Any]:
    f = jax.numpy.float64

    def s(*shape: int) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(((batch,) if batch else ()) + shape, f)  # type: ignore[no-untyped-call]

    K1 = b.lots + 1
    p = {
        "ub": s(b.n, K1),
        "mask": s(b.n, K1),
        "e": s(b.n, K1),
        "lin": s(b.n, K1),
        "L": s(b.n, b.factors),
        "R": s(b.scenarios, b.n),
        "Rrhs": s(b.scenarios),
        "Ron": s(b.scenarios),
        "C": s(b.sectors, b.n),
        "Crhs": s(b.sectors),
        "Con": s(b.sectors),
    }
    for key in ("any", "cost", "impact", "adv", "wa", "wx", "d"):
        p[key] = s(b.n)
    for key in ("gamma", "room", "turn", "te_on", "te2", "var_on", "var2", "nbar"):
        p[key] = s()
    return p, s(b.n, K1), s(), s()


def _convex_checks(prob: Any, data: ProblemData, trade: TradeVec) -> list[Check]:
    """NumPy checks of the constraints the convex problem encodes as given (the wash-sale rule
    and the exact sector risk shares are settled by the engine's rounds; relaxed limits are
    off while diagnosing)."""
    out: list[Check] = []
    for term in prob.limits:
        if not term.relaxed and not isinstance(term, (WashSale, SectorRiskShare)):
            out += term.check(data, trade)
    return out


class FastSolver:
    """Compiled barrier solves, one compiled function per size bucket (thread-safe cache).

    Parameters
    ----------
    settings
        Barrier schedule and tolerances.
    cache_size
        Most compiled functions kept (least recently used dropped).
    """

    def __init__(self, settings: Settings = Settings(), cache_size: int = 16) -> None:
        self.settings = settings
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[Bucket, int], Callable[..., Solution]] = OrderedDict()
        self._lock = threading.Lock()
        self.compile_ms: dict[tuple[Bucket, int], float] = {}
        """Compile time (ms) of each bucket and batch size (0: single problem)."""

    def compiled(self, bucket: Bucket, batch: int = 0) -> tuple[Callable[..., Solution], float]:
        """The compiled solve of ``bucket`` (batched when ``batch`` > 0) and the compile time
        in ms spent now (0.0 on a cache hit)."""
        key = (bucket, batch)
        with self._lock:
            fn = self._cache.get(key)
            if fn is not None:
                self._cache.move_to_end(key)
                return fn, 0.0
        cfg = self.settings

        def one(p: Any, warm: Any, use: Any, tw: Any) -> Solution:
            return solve_padded(p, warm, use, tw, cfg)

        target = jax.vmap(one) if batch else one
        t0 = time.perf_counter()
        fn = jax.jit(target).lower(*_spec(bucket, batch or None)).compile()
        ms = (time.perf_counter() - t0) * 1e3
        with self._lock:
            self._cache[key] = fn
            self.compile_ms[key] = ms
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return fn, ms

    def solve(
        self,
        prob: Any,
        data: ProblemData,
        warm: tuple[TradeVec, float] | None = None,
    ) -> FastOutcome:
        """Solve the problem ``prob`` holds for ``data`` (after ``prob.update(data)``).

        ``warm`` is a previous answer of the same account and the barrier parameter it ended
        at; it is used when it is (nearly) feasible for this problem.
        """
        p, bucket = assemble(prob, data)
        fn, compile_ms = self.compiled(bucket)
        use, tw = 0.0, 1.0
        xw = np.zeros((bucket.n, bucket.lots + 1))
        if warm is not None:
            xw, use, tw = warm_from(warm[0], bucket), 1.0, max(1.0, warm[1] * _WARM_T_FACTOR)
        t0 = time.perf_counter()
        sol = jax.device_get(fn(p, xw, np.asarray(use), np.asarray(tw)))
        ms = (time.perf_counter() - t0) * 1e3
        return self._outcome(prob, data, sol, ms, compile_ms)

    def solve_batch(
        self, probs: Sequence[Any], datas: Sequence[ProblemData]
    ) -> tuple[list[FastOutcome], float, float]:
        """Solve same-bucket problems together with ``vmap``.

        Each ``probs[j]`` is updated with ``datas[j]`` before its values are read, so one
        compiled problem may serve the whole batch. Returns the outcomes, the batch solve time
        and the compile time spent now (ms).
        """
        assembled = []
        for pr, d in zip(probs, datas, strict=True):
            pr.update(d)
            assembled.append(assemble(pr, d))
        bucket = assembled[0][1]
        if any(b != bucket for _, b in assembled):
            raise ValueError("solve_batch needs problems of one bucket")
        size = len(assembled)
        fn, compile_ms = self.compiled(bucket, size)
        stacked = {k: np.stack([a[k] for a, _ in assembled]) for k in assembled[0][0]}
        xw = np.zeros((size, bucket.n, bucket.lots + 1))
        t0 = time.perf_counter()
        sol = jax.device_get(fn(stacked, xw, np.zeros(size), np.ones(size)))
        ms = (time.perf_counter() - t0) * 1e3
        outs = []
        for j, (pr, d) in enumerate(zip(probs, datas, strict=True)):
            pr.update(d)
            one = Solution(*(np.asarray(v)[j] for v in sol))
            outs.append(self._outcome(pr, d, one, ms / size, 0.0))
        return outs, ms, compile_ms

    @staticmethod
    def _outcome(
        prob: Any, data: ProblemData, sol: Solution, ms: float, compile_ms: float
    ) -> FastOutcome:
        x: Arr = np.asarray(sol.x)
        value = float(sol.objective)
        out = FastOutcome(
            None, "", int(sol.newton), ms, compile_ms, value, float(sol.t), bool(sol.warm_used)
        )
        if not bool(sol.start_ok):
            out.reason = "no strictly feasible starting point found"
            return out
        if not bool(sol.converged):
            out.reason = (
                f"not converged after {int(sol.iterations)} iterations "
                f"(min relative slack {float(sol.slack):.3g}, stalls {int(sol.stalls)})"
            )
            return out
        trade = trade_from(x, data)
        bad = [c for c in _convex_checks(prob, data, trade) if not c.holds()]
        if bad:
            c = bad[0]
            out.reason = f"answer breaks {c.name.value} {c.subject}: {c.value:.6g} > {c.limit:.6g}"
            return out
        mine = prob.objective(data, trade)
        if not np.isfinite(value) or abs(mine - value) > _OBJ_ATOL + _OBJ_RTOL * abs(value):
            out.reason = f"objective {value:.8g} disagrees with the NumPy value {mine:.8g}"
            return out
        out.trade = trade
        return out
