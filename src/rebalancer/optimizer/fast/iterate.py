"""The iterate of the fast path's primal-dual method and the quantities of one primal point.

Shared by :mod:`.newton` (one iteration) and :mod:`.pdip` (start, loop, answer). See
:mod:`.pdip` for the problem and :mod:`.kkt` for the layout (``x`` of shape ``(K1, n)``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rebalancer.optimizer.fast.kkt import colsum, low_rank

jax.config.update("jax_enable_x64", True)  # type: ignore[no-untyped-call]

SCALE = 1e4
"""Objective scale (fraction of NAV -> bps), the same as the reference formulation."""

Params = dict[str, Any]
Array = Any


class Settings(NamedTuple):
    """Stopping rules of the interior-point method."""

    gap: float = 1e-2
    """Optimality bound (bps of NAV) that ends the iteration (1e-2 bps = 1e-6 of NAV)."""
    accept: float = 0.5
    """Optimality bound (bps of NAV) an answer must have: its objective is provably at most
    this above the optimum (0.5 bps = 5e-5 of NAV; measured errors are ~1e-8 of NAV)."""
    stall: float = 0.05
    """An iteration that does not improve the bound ends the solve only once the best bound
    (bps of NAV) is at most this (the rounding noise floor is near ``gap``); above it the method
    goes on (an acceptable bound of 0.29 bps grew to 0.50 in one iteration and fell to 0.011 in
    the next)."""
    feas: float = 1e-11
    """Largest violation of a constraint row (fraction of NAV, cones relative to their cap)."""
    max_iter: int = 80
    cones: bool = False
    """Whether the method carries the two risk-cone rows (squared, normalized tracking error
    and VaR; their curvature enters the factor weights and their gradients are low-rank
    columns rebuilt each iteration). :class:`~.solver.FastSolver` compiles both variants and
    sets this per problem (:func:`.inputs.has_cones`): without an active cone the rows are
    left out of the residuals and of the Newton system, whose low-rank columns are then
    constant during a solve and built once. A problem with a cone on, solved without them,
    reports ``converged=False`` instead of a wrong answer."""
    mu0: float = 0.1
    """Starting complementarity (bps of NAV per unit of weight) of a cold start."""
    warm_mu: float = 3e-2
    """Starting complementarity of a warm start (see :data:`.pdip._WARM_SHARE` for the
    measurement; 0.01 before, 0.001 was worse: 12.2 iterations where 0.01 took 10.9)."""


class State(NamedTuple):
    """Iterate of the method. The primal-dual variables are packed by shape (``xz`` =
    ``[x, zl, zu]``, ``ra`` = ``[s_a, l_a]`` of the ADV rows, ``rg`` = ``[s_g, l_g]`` of the
    coupling rows) so that one kernel updates each group."""

    xz: Array
    ra: Array
    rg: Array
    it: Array
    done: Array
    err: Array
    best: Array
    best_x: Array

    @property
    def x(self) -> Array:
        return self.xz[0]

    @property
    def zl(self) -> Array:
        return self.xz[1]

    @property
    def zu(self) -> Array:
        return self.xz[2]

    @property
    def s_a(self) -> Array:
        return self.ra[0]

    @property
    def l_a(self) -> Array:
        return self.ra[1]

    @property
    def s_g(self) -> Array:
        return self.rg[0]

    @property
    def l_g(self) -> Array:
        return self.rg[1]


class Point(NamedTuple):
    """Quantities of one primal point shared by the residuals and the Newton matrix."""

    tt: Array
    g_a: Array
    g_g: Array
    jzc: Array
    """z-space gradients of the two cone rows ``(2, n)`` (``None`` when the cones are off)."""
    gf: Array


def rowcomb(rows: Array, w: Array) -> Array:
    """``rows.T @ w`` for a few rows (``rows`` ``(R, n)``) as unrolled elementwise terms, so that
    XLA fuses it into its users (see :func:`.kkt.colsum`)."""
    out = rows[0] * w[0]
    for j in range(1, rows.shape[0]):
        out = out + rows[j] * w[j]
    return out


def prepare(p: Params, cfg: Settings) -> Params:
    """``p`` with the loop invariants the iteration uses (computed once per solve): ``on_g``
    (the coupling rows the method carries: the cone rows only with ``cfg.cones``), the
    transposed factor loadings and, without cones, the Newton system's low-rank columns."""
    q = dict(p)
    rows = p["Az"].shape[0]
    on_g = jnp.asarray(p["on"])
    if not cfg.cones:
        on_g = on_g.at[rows:].set(0.0)
    q["on_g"] = on_g
    q["npairs"] = 2.0 * jnp.sum(p["mask"]) + jnp.sum(p["any"]) + jnp.sum(on_g)
    q["scale_g"] = jnp.concatenate([jnp.maximum(1.0, jnp.abs(p["b"])), jnp.ones(2)])
    # room to the bound, with the implied bound x <= adv (a redundant constraint may carry
    # the dual residual as well)
    q["cap"] = jnp.minimum(p["ub"], p["adv"][None, :])
    q["d2"] = p["d"] ** 2
    q["row0"] = jnp.zeros_like(p["mask"]).at[0].set(1.0)
    q["Lt"] = p["L"].T
    if not cfg.cones:
        q["U"] = low_rank(jnp.concatenate([q["Lt"], -p["Az"]]), -p["At"])
    return q


def point(p: Params, x: Array, cones: bool) -> Point:
    """Traded amounts, every constraint row value and the objective gradient at ``x`` (``p``
    from :func:`prepare`); the risk cones' rows only with ``cones``."""
    e, m = p["e"], p["mask"]
    z = colsum(e * x)
    tt = colsum(m * x)
    a = p["wa"] + z
    lt = p["Lt"]
    sa = (lt @ a) @ lt + p["d2"] * a
    g_rows = p["b"] - jnp.sum(p["Az"] * z + p["At"] * tt, axis=1)
    if cones:
        xw = p["wx"] + z
        sx = (lt @ xw) @ lt + p["d2"] * xw
        risk = jnp.sum(jnp.stack([a * sa, xw * sx]), axis=1)
        g_g = jnp.concatenate(
            [g_rows, jnp.stack([1.0 - risk[0] / p["te2"], 1.0 - risk[1] / p["var2"]])]
        )
        jzc = jnp.stack([(-2.0 / p["te2"]) * sa, (-2.0 / p["var2"]) * sx])
    else:
        g_g = jnp.concatenate([g_rows, jnp.ones(2)])
        jzc = None
    ts = jnp.where(p["any"] > 0, jnp.maximum(tt, 0.0), 1.0)
    gz = 2.0 * SCALE * p["gamma"] * sa
    gt = SCALE * (p["cost"] + 1.5 * p["impact"] * jnp.sqrt(ts)) * p["any"]
    gf = e * gz + m * (gt + SCALE * p["lin"])
    return Point(tt, p["adv"] - tt, g_g, jzc, gf)


def objective_bps(p: Params, x: Array) -> Array:
    """``F(x)`` in bps of NAV."""
    z = jnp.sum(p["e"] * x, axis=0)
    tt = jnp.maximum(jnp.sum(p["mask"] * x, axis=0), 0.0)
    a = p["wa"] + z
    la = p["L"].T @ a
    risk = la @ la + jnp.sum((p["d"] * a) ** 2)
    return SCALE * (
        p["gamma"] * risk
        + p["cost"] @ tt
        + p["impact"] @ (tt * jnp.sqrt(tt))
        + jnp.sum(p["lin"] * x)
    )
