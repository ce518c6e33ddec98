"""The fast path's entry point: compiled interior-point solves cached per size bucket.

:class:`FastSolver` compiles one function per :class:`~.inputs.Bucket` (and one per batch size
for :meth:`FastSolver.solve_batch`), records each compile time separately from solve times
(JAX's persistent compilation cache, see :func:`enable_compile_cache`, makes a restarted
process load them from disk instead of compiling),
and turns a solution into the engine's :class:`SolveResult` after checking it with the same
NumPy terms that re-check every answer. Anything short of a converged answer (proven within
``Settings.accept`` bps of the optimum) that passes the checks and whose objective matches the
NumPy recomputation is reported as a failure with the reason, so the engine falls back to the
conic solver.

A service must never make a request wait for a compile (13-16 s cold per bucket, about 1 s
from the persistent cache): :meth:`FastSolver.ready` tells whether a bucket is compiled in
memory, :meth:`FastSolver.compile_later` queues a compile on the solver's background thread,
and ``solve(..., wait=False)`` answers "fast path compiling bucket ..." (so the engine falls back
to the conic chain at once) and queues the bucket. :mod:`rebalancer.optimizer.warmup` compiles
the configured buckets at start-up the same way.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import structlog

from rebalancer.optimizer.data import ProblemData
from rebalancer.optimizer.fast.answer import first_broken
from rebalancer.optimizer.fast.compiling import CACHE_ENV as CACHE_ENV
from rebalancer.optimizer.fast.compiling import bucket_label as bucket_label
from rebalancer.optimizer.fast.compiling import default_cache_dir as default_cache_dir
from rebalancer.optimizer.fast.compiling import enable_compile_cache as enable_compile_cache
from rebalancer.optimizer.fast.compiling import freeze_long_lived as freeze_long_lived
from rebalancer.optimizer.fast.compiling import input_spec, lower_priority
from rebalancer.optimizer.fast.inputs import (
    Bucket,
    assemble,
    has_cones,
    trade_from,
    warm_from,
)
from rebalancer.optimizer.fast.pdip import Settings, Solution, pack, solve_padded, unpack
from rebalancer.optimizer.terms.base import Arr, TradeVec

log = structlog.get_logger(__name__)

_OBJ_RTOL, _OBJ_ATOL = 1e-6, 1e-9
Key = tuple[Bucket, bool]
"""A compiled single-problem function: its bucket and whether it carries the risk cones."""


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
    """Proven optimality bound of the answer (bps of NAV); passed back with a warm start."""
    warm_used: bool


_shared: FastSolver | None = None
_shared_lock = threading.Lock()


def shared_fast_solver(compile_cache: Path | bool | None = True) -> FastSolver:
    """The process-wide :class:`FastSolver` with default settings (created on first use with
    ``compile_cache``), so the service's recommenders, the batch worker and the warm-up share
    one set of compiled buckets."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = FastSolver(compile_cache=compile_cache)
        return _shared


class FastSolver:
    """Compiled interior-point solves, one compiled function per size bucket (thread-safe).

    Parameters
    ----------
    settings
        Stopping rules of the interior-point method.
    cache_size
        Most compiled functions kept in memory (least recently used dropped).
    compile_cache
        Directory of JAX's persistent compilation cache (default :func:`default_cache_dir`;
        ``None`` leaves JAX's configuration alone). Shared by the whole process.
    freeze_gc
        After each compile, :func:`freeze_long_lived`: a compile leaves JAX's long-lived
        caches behind, and the process's objects alive then (modules, compiled problems) are
        long-lived too; frozen, no later full collection walks them (the P99 of ``analyze``).
    """

    def __init__(
        self,
        settings: Settings = Settings(),
        cache_size: int = 16,
        compile_cache: Path | bool | None = True,
        freeze_gc: bool = True,
    ) -> None:
        self.settings = settings
        self.cache_size = cache_size
        self.freeze_gc = freeze_gc
        target = default_cache_dir() if compile_cache is True else compile_cache or None
        self.compile_cache: Path | None = enable_compile_cache(target)
        """The persistent compilation cache directory in use (``None``: memory only)."""
        self._cache: OrderedDict[tuple[Bucket, int], Callable[..., Any]] = OrderedDict()
        self._cones: OrderedDict[tuple[Bucket, int], Callable[..., Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.compile_ms: dict[tuple[Bucket, int], float] = {}
        """Compile time (ms) of each bucket and batch size (0: single problem)."""
        self.cones_compile_ms: dict[tuple[Bucket, int], float] = {}
        """The same for the variant that carries the risk cones (tracking-error and VaR
        limits)."""
        self._inflight: dict[tuple[Bucket, int, bool], threading.Event] = {}
        self._queue: queue.Queue[Key] = queue.Queue()
        self._queued: dict[Key, None] = {}
        self._worker: threading.Thread | None = None
        self.on_miss: Callable[[Bucket, bool], None] | None = None
        """Called (in the request's thread) when ``solve(..., wait=False)`` finds its bucket
        not compiled and queues it."""
        self.on_idle: Callable[[], None] | None = None
        """Called in the background compile thread each time its queue runs empty after a
        compile (the warm-up freezes the garbage collector's long-lived objects there)."""

    def ready(self, bucket: Bucket, cones: bool = False, batch: int = 0) -> bool:
        """Whether the solve of ``bucket`` (the variant with risk cones when ``cones``; batched
        when ``batch`` > 0) is compiled in memory, so a solve starts at once. Never compiles."""
        with self._lock:
            return (bucket, batch) in (self._cones if cones else self._cache)

    def compiling(self) -> list[str]:
        """Labels (:func:`bucket_label`) of the buckets queued or being compiled in the
        background, in queue order."""
        with self._lock:
            return [
                bucket_label(b, c)
                for b, c in self._queued
                if (b, 0) not in (self._cones if c else self._cache)
            ]

    def compile_later(self, bucket: Bucket, cones: bool = False) -> bool:
        """Queue the single-problem solve of ``bucket`` for compiling on this solver's
        background thread (one thread per solver, started on first use, at a lower CPU
        priority where the OS allows). Returns whether it was queued now (False: compiled or
        queued already)."""
        key = (bucket, cones)
        with self._lock:
            if key in self._queued or (bucket, 0) in (self._cones if cones else self._cache):
                return False
            self._queued[key] = None
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(
                    target=self._compile_loop, name="fast-compile", daemon=True
                )
                self._worker.start()
        self._queue.put(key)
        return True

    def wait_ready(self, bucket: Bucket, cones: bool = False, timeout: float | None = None) -> bool:
        """Wait until ``bucket`` is compiled (queued or compiling elsewhere); returns
        :meth:`ready`. Does not queue it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.ready(bucket, cones):
            with self._lock:
                event = self._inflight.get((bucket, 0, cones))
                queued = (bucket, cones) in self._queued
            if event is None and not queued:
                return False
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            if event is not None:
                event.wait(left)
            else:
                time.sleep(0.05 if left is None else min(0.05, left))
        return True

    def _compile_loop(self) -> None:
        lower_priority()
        while True:
            key = self._queue.get()
            try:
                _, ms = self.compiled(key[0], 0, key[1])
                log.info("fast.compiled", bucket=bucket_label(*key), ms=round(ms))
            except Exception:  # logged; a request of this bucket queues it again
                log.exception("fast.compile_failed", bucket=bucket_label(*key))
            finally:
                with self._lock:
                    self._queued.pop(key, None)
                    idle = not self._queued
            if idle and self.on_idle is not None:
                try:
                    self.on_idle()
                except Exception:
                    log.exception("fast.on_idle_failed")

    def compiled(
        self, bucket: Bucket, batch: int = 0, cones: bool = False
    ) -> tuple[Callable[..., Any], float]:
        """The compiled solve of ``bucket`` (batched when ``batch`` > 0; the variant that carries
        the risk cones when ``cones``) and the compile time in ms spent now (0.0 on an
        in-memory hit; a load from the persistent cache is counted and is much shorter than a
        compile; waiting for the same compile running in another thread counts as well). One
        compile per bucket even when several threads ask at once."""
        key = (bucket, batch)
        cache, times = (
            (self._cones, self.cones_compile_ms) if cones else (self._cache, self.compile_ms)
        )
        t0 = time.perf_counter()
        while True:
            with self._lock:
                fn = cache.get(key)
                if fn is not None:
                    cache.move_to_end(key)
                    waited = (time.perf_counter() - t0) * 1e3
                    return fn, waited if waited > 1.0 else 0.0
                event = self._inflight.get((bucket, batch, cones))
                if event is None:
                    event = self._inflight[(bucket, batch, cones)] = threading.Event()
                    break
            event.wait()
        try:
            fn, ms = self._compile(bucket, batch, cones)
            with self._lock:
                cache[key] = fn
                times[key] = ms
                while len(cache) > self.cache_size:
                    cache.popitem(last=False)
        finally:
            with self._lock:
                del self._inflight[(bucket, batch, cones)]
            event.set()
        if self.freeze_gc:
            freeze_long_lived()
        return fn, ms

    def _compile(self, bucket: Bucket, batch: int, cones: bool) -> tuple[Callable[..., Any], float]:
        # the cone rows change the Newton system's low-rank columns every iteration, so a
        # problem without them runs a variant whose columns are built once per solve
        cfg = self.settings._replace(cones=cones)

        def one(p: Any, warm: Any, use: Any) -> Any:
            return pack(solve_padded(p, warm, use, cfg))

        target: Callable[..., Any] = jax.vmap(one) if batch else one
        t0 = time.perf_counter()
        fn = jax.jit(target).lower(*input_spec(bucket, batch or None)).compile()
        return fn, (time.perf_counter() - t0) * 1e3

    def solve(
        self,
        prob: Any,
        data: ProblemData,
        warm: tuple[TradeVec, float] | None = None,
        wait: bool = True,
    ) -> FastOutcome:
        """Solve the problem ``prob`` holds for ``data`` (after ``prob.update(data)``).

        ``warm`` is a previous answer of the same account and its ``t_final`` (only the answer
        is used); the method starts from it, moved strictly inside this problem's bounds, and a
        warm start that fails is retried once from the cold start. With ``wait=False`` a
        bucket that is not compiled yet is not compiled here: it is queued
        (:meth:`compile_later`) and the outcome fails at once with the reason
        ``fast path compiling bucket <label>``, so the caller's fallback answers.
        """
        p, bucket = assemble(prob, data)
        cones = has_cones(p)
        if not wait and not self.ready(bucket, cones):
            if self.compile_later(bucket, cones) and self.on_miss is not None:
                self.on_miss(bucket, cones)
            reason = f"fast path compiling bucket {bucket_label(bucket, cones)}"
            return FastOutcome(None, reason, 0, 0.0, 0.0, None, 0.0, False)
        fn, compile_ms = self.compiled(bucket, 0, cones)
        use = 0.0
        xw = np.zeros((bucket.lots + 1, bucket.n))
        if warm is not None:
            xw, use = warm_from(warm[0], bucket), 1.0

        def run(start: Arr, use: float) -> FastOutcome:
            t0 = time.perf_counter()
            sol = unpack(np.asarray(fn(p, start, np.asarray(use))), start.shape)
            return self._outcome(prob, data, sol, (time.perf_counter() - t0) * 1e3, compile_ms)

        out = run(xw, use)
        if out.trade is None and warm is not None:
            # a warm start that fails is retried cold before the caller falls back (seen with
            # a tracking-error limit the current portfolio breaks: the previous round's answer
            # sits on the cone and its small restart duals stall the method)
            cold = run(np.zeros_like(xw), 0.0)
            cold.iterations += out.iterations
            cold.solve_ms += out.solve_ms
            if cold.trade is None:
                cold.reason = f"{out.reason}; retried cold: {cold.reason}"
            out = cold
        return out

    def solve_batch(
        self, probs: Sequence[Any], datas: Sequence[ProblemData]
    ) -> tuple[list[FastOutcome], float, float]:
        """Solve same-bucket problems together with ``vmap``.

        Each ``probs[j]`` is updated with ``datas[j]`` before its values are read, so one
        compiled problem may serve the whole batch. Returns the outcomes, the batch solve time
        and the compile time spent now (ms). A batch with any tracking-error or VaR limit runs
        the variant that carries the risk cones for all of its problems.
        """
        assembled = []
        for pr, d in zip(probs, datas, strict=True):
            pr.update(d)
            assembled.append(assemble(pr, d))
        bucket = assembled[0][1]
        if any(b != bucket for _, b in assembled):
            raise ValueError("solve_batch needs problems of one bucket")
        size = len(assembled)
        cones = any(has_cones(a) for a, _ in assembled)
        fn, compile_ms = self.compiled(bucket, size, cones)
        t0 = time.perf_counter()
        stacked = {k: np.stack([a[k] for a, _ in assembled]) for k in assembled[0][0]}
        xw = np.zeros((size, bucket.lots + 1, bucket.n))
        raw = np.asarray(fn(stacked, xw, np.zeros(size)))
        sols = [unpack(raw[j], xw.shape[1:]) for j in range(size)]
        ms = (time.perf_counter() - t0) * 1e3
        outs = [
            self._outcome(pr, d, sol, ms / size, 0.0)
            for pr, d, sol in zip(probs, datas, sols, strict=True)
        ]
        return outs, ms, compile_ms

    @staticmethod
    def _outcome(
        prob: Any, data: ProblemData, sol: Solution, ms: float, compile_ms: float
    ) -> FastOutcome:
        x: Arr = np.asarray(sol.x)
        value = float(sol.objective)
        out = FastOutcome(
            None,
            "",
            int(sol.iterations),
            ms,
            compile_ms,
            value,
            float(sol.bound),
            bool(sol.warm_used),
        )
        if not bool(sol.converged):
            out.reason = (
                f"not converged after {int(sol.iterations)} iterations "
                f"(optimality bound {float(sol.bound):.3g} bps of NAV, "
                f"row violation {float(sol.perr):.3g})"
            )
            return out
        trade = trade_from(x, data)
        summed = trade.summed()  # per-instrument sums once for the checks and the objective
        c = first_broken(prob, data, summed)
        if c is not None:
            out.reason = f"answer breaks {c.name.value} {c.subject}: {c.value:.6g} > {c.limit:.6g}"
            return out
        mine = prob.objective(data, summed)
        if not np.isfinite(value) or abs(mine - value) > _OBJ_ATOL + _OBJ_RTOL * abs(value):
            out.reason = f"objective {value:.8g} disagrees with the NumPy value {mine:.8g}"
            return out
        out.trade = trade
        return out
