"""One iteration of the fast path's primal-dual method: residuals, the proven optimality bound,
and the Mehrotra predictor-corrector step (see :mod:`.pdip`).

Written for XLA on CPU, where each kernel of the loop body costs a few microseconds of dispatch,
more than its arithmetic at these sizes: per-instrument sums over the lots and combinations of
a few rows are unrolled elementwise (they fuse), the scalar reductions of one stage share one
reduction kernel (all step lengths of a direction, all sums of the optimality bound), and
divisions are reciprocals taken once per iteration (a step length to the boundary is
``1 / max(-dv / v)``, a product with ``1 / v``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rebalancer.optimizer.fast.iterate import SCALE, Params, Point, Settings, State, rowcomb
from rebalancer.optimizer.fast.kkt import factor, low_rank

Array = Any
TAU = 0.99
"""Fraction to the boundary. 0.99 instead of 0.995: with 0.995 a few accounts took 20-40
iterations (the slowest account sets a vmapped batch's time); measured with the cold start,
1,000 benchmark accounts of 50 instruments: mean 12.4 -> 11.9 iterations, slowest of each batch
of 100 17.6 -> 14.6; 30 test-factory accounts of 200 instruments: 17.3 -> 15.3 (max 40 -> 27);
500 instruments and 50-instrument test-factory accounts +0.1-0.3."""

TAU_END = 0.999
"""Fraction to the boundary once the complementarity gap is below ``TAU_GAP`` (bps of NAV).
Measured (iterations of the cold solve, mean): 30 benchmark accounts of 500 instruments
13.87 -> 13.50 (max 17 -> 16), 200 of 50 11.80 -> 11.59, 40 test-factory accounts of 50
11.85 -> 11.62, 40 of 200 14.80 -> 14.30 (max 27 -> 26); all converge."""
TAU_GAP = 10.0


def _inv(v: Array, live: Array) -> Array:
    """``1 / v`` where ``live`` (``v > 0`` there), else 0."""
    return jnp.where(live, 1.0 / jnp.where(live, v, 1.0), 0.0)


def step(st: State, p: Params, pt: Point, cfg: Settings) -> State:
    """One Mehrotra predictor-corrector iteration (or the convergence test that ends)."""
    e, m, ub = p["e"], p["mask"], p["ub"]
    on_a, on_g = p["any"], p["on_g"]
    x, zl, zu = st.x, st.zl, st.zu
    l_a, l_g = st.l_a, st.l_g
    rows = p["Az"].shape[0]
    # slack reset: a row that holds at x gets its true value as slack (no primal residual
    # left to drift against a vanishing slack); violated rows keep their slack variable
    s_a = jnp.where((on_a > 0) & (pt.g_a > 0), pt.g_a, st.s_a)
    s_g = jnp.where((on_g > 0) & (pt.g_g > 0), pt.g_g, st.s_g)
    ux = jnp.where(m > 0, ub - x, 1.0)
    # residuals: dual (x-space), primal rows, complementarity
    jtz = rowcomb(p["Az"], l_g)  # J_z' lam = -jtz (cone rows added below)
    if cfg.cones:
        jtz = jtz - rowcomb(pt.jzc, l_g[rows:])
    jtt = rowcomb(p["At"], l_g)
    rd = (pt.gf + e * jtz + m * (jtt + l_a) - zl + zu) * m
    rp_a = (pt.g_a - s_a) * on_a
    rp_g = (pt.g_g - s_g) * on_g
    room = jnp.maximum(p["cap"] - x, 0.0)
    # A dual-feasible bound: moving the dual residual into the bound duals (zl + rd+, zu + rd-)
    # makes the Lagrangian's gradient zero, so for this convex problem F(x) - F* is at most
    # ``bound`` (plus the rows' residuals). It needs no dual accuracy where x sits at a bound
    # (the impact term t^1.5 is not twice differentiable at 0, so rd converges slowly there).
    # the per-instrument terms ride on the buy row (elementwise, no concatenation: XLA on CPU
    # reduces a concatenation of unequal pieces slowly)
    row0 = p["row0"]
    sums = jnp.sum(
        jnp.stack(
            [
                m * (x * zl + ux * zu) + row0 * (s_a * l_a * on_a),
                m * (x * jnp.maximum(rd, 0.0) + room * jnp.maximum(-rd, 0.0))
                + row0 * (jnp.abs(l_a * on_a) * jnp.abs(rp_a)),
            ]
        ),
        axis=(1, 2),
    ) + jnp.stack(
        [
            jnp.sum(s_g * l_g * on_g),
            jnp.sum(jnp.abs(l_g * on_g) * jnp.abs(rp_g)),
        ]
    )
    gap = sums[0]
    bound = sums[1] + gap
    perr = jnp.maximum(jnp.max(jnp.abs(rp_a)), jnp.max(jnp.abs(rp_g) / p["scale_g"]))
    conv = (perr <= cfg.feas) & (bound <= cfg.gap)
    # the converged evaluation (the last of every solve) needs no Newton direction: the
    # conditional skips the factorization and both solves, one iteration's work (under
    # ``vmap`` it becomes a select that computes both branches). It returns the increments
    # only, so the new iterate is written straight into the loop's buffers.
    dxz, dra, drg, steps = jax.lax.cond(
        conv,
        lambda: (jnp.zeros_like(st.xz), jnp.zeros_like(st.ra), jnp.zeros_like(st.rg), jnp.ones(2)),
        lambda: _advance(st, p, pt, cfg, s_a, s_g, ux, rd, rp_a, rp_g, gap),
    )
    a, b = steps[0], steps[1]
    score = jnp.where(perr <= cfg.feas, bound, jnp.inf)
    better = score < st.best
    # once an acceptable answer is in hand, a blocked step or an iteration that does not
    # improve the bound ends the solve (the rounding noise floor of the dual residual)
    best = jnp.minimum(score, st.best)
    ok_best = best <= cfg.accept
    # ... but a bound that grows for one iteration is not yet the noise floor while the best
    # is far above the gap tolerance (it fell 0.29 -> 0.50 -> 0.011 bps in one account)
    stalled = ~better & (best <= cfg.stall)
    return State(
        xz=st.xz + dxz,
        ra=jnp.stack([s_a, st.l_a]) + dra,
        rg=jnp.stack([s_g, st.l_g]) + drg,
        it=st.it + jnp.where(conv, 0, 1),
        done=conv | (jnp.maximum(a, b) < 1e-12) | (ok_best & ((jnp.minimum(a, b) < 0.1) | stalled)),
        err=jnp.stack([perr, bound, gap, jnp.where(conv, 0.0, a)]),
        best=jnp.where(better, score, st.best),
        best_x=jnp.where(better, st.x, st.best_x),
    )


def _advance(
    st: State,
    p: Params,
    pt: Point,
    cfg: Settings,
    s_a: Array,
    s_g: Array,
    ux: Array,
    rd: Array,
    rp_a: Array,
    rp_g: Array,
    gap: Array,
) -> tuple[Array, Array, Array, Array]:
    """The Newton step of :func:`step` from its residuals: the increments of the packed
    iterate (step lengths applied) and the primal and dual step lengths (0 when the direction
    is not finite)."""
    e, m = p["e"], p["mask"]
    on_a, on_g = p["any"], p["on_g"]
    x, zl, zu = st.x, st.zl, st.zu
    l_a, l_g = st.l_a, st.l_g
    az, at = p["Az"], p["At"]
    rows = az.shape[0]
    npairs = p["npairs"]
    row0 = p["row0"]
    # reciprocals, once per iteration (every division of both directions is a product)
    # (one kernel per group of equal shape)
    free = m > 0
    ixs, izl, izu, iux = _inv(jnp.concatenate([st.xz, ux[None]]), free)
    on_ab = on_a > 0
    isa, ila = _inv(jnp.stack([s_a, l_a]), on_ab)
    on_gb = on_g > 0
    isg = _inv(s_g, on_gb)
    # Newton matrix: bound terms, per-instrument curvature, low-rank coupling
    delta = jnp.where(free, zl * ixs + zu * iux, 1.0)
    kappa = SCALE * p["gamma"]
    if cfg.cones:
        kappa = kappa + l_g[-2] / p["te2"] + l_g[-1] / p["var2"]
    ts = jnp.where(on_ab, jnp.maximum(pt.tt, 1e-300), 1.0)
    beta_imp = on_a * SCALE * 0.75 * p["impact"] * jax.lax.rsqrt(ts)
    beta = beta_imp + l_a * isa
    alpha = 2.0 * kappa * p["d2"]
    live = on_gb & (l_g > 0)
    ilg = _inv(l_g, live)
    cinv_g = jnp.where(live, jnp.minimum(s_g * ilg, 1e100), 1.0)
    wg = live.astype(float)
    nf = p["L"].shape[1]
    if cfg.cones:
        uz = jnp.concatenate([p["Lt"], -az, pt.jzc])
        u = low_rank(uz, jnp.concatenate([-at, jnp.zeros_like(pt.jzc)]))
        keep = rows + 2
    else:
        u = p["U"]
        keep = rows
    wu = jnp.concatenate([jnp.ones(nf), wg[:keep]])
    cinv = jnp.concatenate([jnp.full(nf, 0.5) / kappa, cinv_g[:keep]])
    solve = factor(e, m, delta, alpha, beta, u, cinv, wu)
    ratio_a = on_a * l_a / jnp.maximum(s_a * beta_imp + l_a, 1e-300)
    pad_c = jnp.zeros(l_g.shape[0] - keep)

    def direction(rs_a: Array, rs_g: Array, rl: Array, ru: Array) -> tuple[Array, ...]:
        w_a = on_a * (rs_a + l_a * rp_a) * isa
        w_g = on_g * (rs_g + l_g * rp_g) * isg
        jw = -rowcomb(az, w_g)
        if cfg.cones:
            jw = jw + rowcomb(pt.jzc, w_g[rows:])
        rhs = -rd - e * jw + m * (w_a + rowcomb(at, w_g) - rl * ixs + ru * iux)
        dx, c, bdt, dz, dt = solve(rhs)
        # row duals from the multipliers (no huge lam / s factor formed as s -> 0)
        dl_a = on_a * (ratio_a * bdt - w_a)
        dl_g = on_g * (-w_g - jnp.concatenate([c[nf:], pad_c]))
        ds_a = on_a * (rp_a - dt)
        jd = -jnp.sum(az * dz + at * dt, axis=1)
        jd = jnp.concatenate([jd, pt.jzc @ dz if cfg.cones else pad_c])
        ds_g = on_g * (rp_g + jd)
        dzl = -m * (rl + zl * dx) * ixs
        dzu = m * (zu * dx - ru) * iux
        # every primal and every dual step length to the boundary (1 / max(-dv / v)): the box
        # and per-instrument rows in one reduction over (2, K1, n), the few coupling rows apart
        primal = jnp.maximum(jnp.maximum(-dx * ixs, dx * iux), row0 * (-ds_a * isa))
        dual = jnp.maximum(jnp.maximum(-dzl * izl, -dzu * izu), row0 * (-dl_a * ila))
        # a NaN entry blocks the step (XLA's max reduction on CPU drops NaN)
        top = jnp.max(
            jnp.stack([jnp.where(jnp.isnan(v), jnp.inf, v) for v in (primal, dual)]), axis=(1, 2)
        )
        top = jnp.maximum(top, jnp.stack([jnp.max(-ds_g * isg), jnp.max(-dl_g * ilg)]))
        amax = 1.0 / jnp.maximum(top, 1.0)
        return dx, ds_a, ds_g, dl_a, dl_g, dzl, dzu, amax

    # predictor (affine scaling)
    cx, cu = m * x * zl, m * ux * zu
    ca, cg = on_a * s_a * l_a, on_g * s_g * l_g
    dx, ds_a, ds_g, dl_a, dl_g, dzl, dzu, aff = direction(ca, cg, cx, cu)
    pa, da = aff[0], aff[1]
    gap_aff = jnp.sum(
        m * ((x + pa * dx) * (zl + da * dzl) + (ux - pa * dx) * (zu + da * dzu))
        + row0 * ((s_a + pa * ds_a) * (on_a * (l_a + da * dl_a)))
    ) + jnp.sum((s_g + pa * ds_g) * (on_g * (l_g + da * dl_g)))
    mu = gap / npairs
    sigma = jnp.clip(gap_aff / jnp.maximum(gap, 1e-300), 0.0, 1.0) ** 3
    # never aim below a tenth of the gap tolerance: slacks of active rows would only degenerate
    smu = jnp.maximum(sigma * mu, 0.1 * cfg.gap / npairs)
    # corrector: centering plus the second-order term of the predictor
    dx, ds_a, ds_g, dl_a, dl_g, dzl, dzu, amax = direction(
        ca + on_a * (ds_a * dl_a - smu),
        cg + on_g * (ds_g * dl_g - smu),
        cx + m * (dx * dzl - smu),
        cu - m * (dx * dzu + smu),
    )
    # fraction to the boundary TAU, 0.999 once the gap is small (the last iterations' full
    # steps are cut by the boundary of duals that go to zero: 100x less residual per
    # iteration with 0.99, 1000x with 0.999)
    steps = jnp.minimum(1.0, jnp.where(gap < TAU_GAP, TAU_END, TAU) * amax)
    steps = jnp.where(jnp.isfinite(steps), steps, 0.0)
    a, b = steps[0], steps[1]
    return (
        jnp.stack([a * dx, b * dzl, b * dzu]),
        jnp.stack([a * ds_a, b * dl_a]),
        jnp.stack([a * ds_g, b * dl_g]),
        steps,
    )
