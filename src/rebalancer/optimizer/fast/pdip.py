"""JAX core of the fast path: an infeasible-start primal-dual interior-point method
(Mehrotra predictor-corrector) for exactly the recommendation problem.

Variables per instrument ``i`` are one column ``x[:, i] = (buy_i, sell_i1, ..., sell_iK)``
(fractions of NAV, lots-major layout, see :mod:`.kkt`). With ``z = e'x`` (net trade) and
``tt = m'x`` (gross traded), the objective in basis points of NAV is::

    F(x) = 1e4 * (gamma a'Sigma a + cost'tt + impact'tt^1.5 + sum(lin * x)),  a = w - w* + z

``Sigma = L L' + diag(d^2)``. Constraints: the box ``0 <= x <= ub`` (kept strictly inside,
dual ``zl``/``zu``) and ``G(x) >= 0`` with a slack ``s`` and dual ``lam`` per row: the ADV row of
each instrument (``adv - tt``), the coupling rows ``b - Az z - At tt`` (cash, turnover, stress
scenarios, sector linearization) and the two risk cones in squared, normalized form
(``1 - a'Sigma a / te^2`` and ``1 - x'Sigma x / (VaR/z)^2``). Lots are columns of one block, so
the tax of selling an amount is the sorted piecewise-linear function the columns span; the
method picks the cheapest lots itself and there is no per-lot coupling.

Each iteration (:mod:`.newton`) solves the condensed Newton system twice with one
factorization (predictor and Mehrotra corrector) and takes separate primal and dual steps
(fraction to the boundary 0.99); a row that holds at ``x`` gets its true value as slack. The
stop is a proof: with the dual residual moved into the bound duals the Lagrangian is
stationary, so ``F(x) - F*`` is at most the bound computed in :func:`.newton.step` (bps of
NAV). The solve ends when that bound is below ``Settings.gap``, or once an acceptable iterate
(bound below ``Settings.accept``, every row within ``feas``) has its step blocked or stops
improving below ``Settings.stall``; it returns the
best acceptable iterate. No feasible start is needed; an infeasible problem simply does not
converge. Without ``Settings.cones`` the two cone rows are left out of the iteration.

All functions are pure, take a dict of padded arrays ``p`` and are jit/vmap friendly; the solve
is one ``while_loop``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rebalancer.optimizer.fast.iterate import SCALE as SCALE
from rebalancer.optimizer.fast.iterate import Params, Settings, State, point, prepare
from rebalancer.optimizer.fast.iterate import objective_bps as objective_bps
from rebalancer.optimizer.fast.iterate import rowcomb as rowcomb
from rebalancer.optimizer.fast.newton import step

__all__ = [
    "SCALE",
    "Settings",
    "Solution",
    "State",
    "objective_bps",
    "pack",
    "rowcomb",
    "solve_padded",
    "unpack",
]

Array = Any
_START_FRACTION = 0.3
"""Cold start: this fraction of each free entry's bound (capped by the ADV room per entry)."""
_DUAL_FIT = 0.25
"""Cold start: this part of the objective gradient's positive (negative) side is added to the
lower (upper) bound duals, so the first iterations start closer to dual feasibility. Measured
on the benchmark accounts: 14.1 -> 12.4 iterations on average at 50 instruments (the slowest
of a batch of 100: 19.9 -> 17.6), 14.9 -> 13.6 at 500."""


def initial_state(p: Params, x0: Array, mu0: Array, cfg: Settings) -> State:
    """Primal-dual start at ``x0`` (strictly inside the box; ``p`` from :func:`.prepare`):
    slacks are the row values kept away from zero, duals are ``mu0`` over their slack; the
    bound duals also carry ``_DUAL_FIT`` of the objective gradient's sign-split parts (a move
    toward dual feasibility that keeps them positive)."""
    m = p["mask"]
    pt = point(p, x0, cfg.cones)
    ux = jnp.where(m > 0, p["ub"] - x0, 1.0)
    xs = jnp.where(m > 0, x0, 1.0)
    floor_a = 0.1 * jnp.abs(p["adv"]) + 1e-8
    s_a = jnp.where(p["any"] > 0, jnp.maximum(pt.g_a, floor_a), 1.0)
    scale_g = jnp.concatenate([jnp.maximum(jnp.abs(p["b"]), 1e-3), jnp.ones(2)])
    s_g = jnp.where(p["on_g"] > 0, jnp.maximum(pt.g_g, 0.1 * scale_g), 1.0)
    zero = jnp.zeros((), int)
    return State(
        xz=jnp.stack(
            [
                x0,
                m * (mu0 / xs + _DUAL_FIT * jnp.maximum(pt.gf, 0.0)),
                m * (mu0 / ux + _DUAL_FIT * jnp.maximum(-pt.gf, 0.0)),
            ]
        ),
        ra=jnp.stack([s_a, p["any"] * mu0 / s_a]),
        rg=jnp.stack([s_g, p["on_g"] * mu0 / s_g]),
        it=zero,
        done=jnp.zeros((), bool),
        err=jnp.full((4,), jnp.inf),
        best=jnp.asarray(jnp.inf),
        best_x=x0,
    )


def cold_start(p: Params) -> Array:
    """A point well inside the box: ``_START_FRACTION`` of every lot and of every buy bound,
    at most ``min(adv / (2 K1), 1e-3)`` per entry."""
    m, ub = p["mask"], p["ub"]
    cap = jnp.where(p["any"] > 0, p["adv"], 0.0)
    k1 = m.shape[0]
    per = jnp.minimum(cap / (2.0 * k1), 1e-3)
    return m * jnp.minimum(_START_FRACTION * ub, per[None, :])


_WARM_SHARE = 0.99
"""Warm start: share of the previous answer in the start point (the rest is the cold start).
Measured with ``Settings.warm_mu`` 0.03 (mean iterations of the wash-sale re-solve, 0.9 and
0.01 before): 320 batch-benchmark accounts of 50 instruments 10.85 -> 8.78, the 33 warm
solves of the 109 seeded golden requests 7.45 -> 7.03, every solve converged."""


def warm_point(p: Params, warm: Array) -> Array:
    """A previous answer moved strictly inside this problem's box (bounds may have closed),
    mixed with the cold start (:data:`_WARM_SHARE`)."""
    m, ub = p["mask"], p["ub"]
    x0 = cold_start(p)
    lo = 1e-3 * x0
    xw = jnp.clip(warm, lo, ub - jnp.maximum(1e-3 * ub, lo))
    return m * (_WARM_SHARE * xw + (1.0 - _WARM_SHARE) * x0)


def run(p: Params, st: State, cfg: Settings) -> State:
    """Iterate until converged, stopped or ``max_iter`` (``p`` from :func:`.prepare`)."""

    def cond(s: State) -> Array:
        return (~s.done) & (s.it < cfg.max_iter)

    def body(s: State) -> State:
        return step(s, p, point(p, s.x, cfg.cones), cfg)

    return jax.lax.while_loop(cond, body, st)


class Solution(NamedTuple):
    """Output of one fast solve (arrays; batched under ``vmap``)."""

    x: Array
    objective: Array
    """F(x) as a fraction of NAV."""
    iterations: Array
    converged: Array
    bound: Array
    """Proven bound (bps of NAV) on how far the objective is above the optimum."""
    perr: Array
    """Largest row violation at the answer (fraction of NAV)."""
    warm_used: Array


def solve_padded(p: Params, warm: Array, use_warm: Array, cfg: Settings) -> Solution:
    """Start (cold, or from ``warm`` when ``use_warm`` > 0), iterate, report (pure)."""
    use = use_warm > 0
    p = prepare(p, cfg)
    x0 = jnp.where(use, warm_point(p, warm), cold_start(p))
    mu0 = jnp.where(use, cfg.warm_mu, cfg.mu0)
    st = run(p, initial_state(p, x0, mu0, cfg), cfg)
    x = st.best_x
    return Solution(
        x=x,
        objective=objective_bps(p, x) / SCALE,
        iterations=st.it,
        converged=(st.best <= cfg.accept) & (cfg.cones | (jnp.sum(p["on"][-2:]) == 0)),
        bound=st.best,
        perr=st.err[0],
        warm_used=use,
    )


def pack(sol: Solution) -> Array:
    """``sol`` as one flat float64 array (``x`` raveled, then the six scalars), so a compiled
    solve hands back one buffer: each output array costs a host transfer of its own (measured
    at 500 instruments: 0.41 ms for the seven outputs of :class:`Solution`)."""
    stats = jnp.stack(
        [
            sol.objective,
            sol.iterations.astype(float),
            sol.converged.astype(float),
            sol.bound,
            sol.perr,
            jnp.asarray(sol.warm_used).astype(float),
        ]
    )
    return jnp.concatenate([sol.x.reshape(-1), stats])


def unpack(raw: Any, shape: tuple[int, int]) -> Solution:
    """The :class:`Solution` of :func:`pack`'s array ``raw`` (NumPy, one problem), ``x`` of
    ``shape`` ``(K1, n)``."""
    size = shape[0] * shape[1]
    stats = raw[size:]
    return Solution(
        x=raw[:size].reshape(shape),
        objective=stats[0],
        iterations=int(stats[1]),
        converged=bool(stats[2]),
        bound=stats[3],
        perr=stats[4],
        warm_used=bool(stats[5]),
    )
