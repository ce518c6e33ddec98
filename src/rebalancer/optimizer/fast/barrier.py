"""JAX core of the fast path: a structure-exploiting log-barrier (interior-point) method.

Variables per instrument ``i`` are one row ``x_i = (buy_i, sell_i1, ..., sell_iK)`` (fractions of
NAV). Lots are columns of a fixed-size row, so the tax of selling ``s`` of an instrument is the
sorted piecewise-linear function the lot columns span (the barrier picks the cheapest lots first
by itself); there is no lot-to-instrument matrix. With ``z_i = e'x_i`` (net trade) and
``t_i = 1'x_i`` (gross traded), the objective in basis points of NAV is::

    F(x) = 1e4 * (gamma * a'Sigma a + cost't + impact't^1.5 + sum(lin * x)),  a = w - w* + z

with ``Sigma = L L' + diag(d^2)``. Every constraint is a log-barrier term. The Newton matrix is
``block-diag(Delta_i + alpha_i e e' + beta_i 1 1') + V V'``: each (K+1)-block is inverted in
closed form (rank-2 Woodbury) and the global part ``V`` (factor loadings, cash, turnover, stress
rows, sector rows, the two risk-cone gradients; rank ``k + m + J + 4``) by a small Cholesky.
One Newton step costs ``O(n K r + n r^2 + r^3)``.

All functions are pure, take a dict of padded arrays ``p`` and are jit/vmap friendly.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)  # type: ignore[no-untyped-call]

SCALE = 1e4
"""Objective scale (fraction of NAV -> bps), the same as the reference formulation."""

Params = dict[str, Any]
Array = Any


class Settings(NamedTuple):
    """Barrier schedule and tolerances (bps of NAV for ``gap``)."""

    t0: float = 1.0
    mu: float = 100.0
    gap: float = 1e-5
    center_tol: float = 1e-7
    """Newton decrement (lambda^2 / 2) that ends the last centering."""
    loose_tol: float = 1.0
    """Newton decrement that ends an intermediate centering (then a predictor step)."""
    max_iter: int = 300


class Slacks(NamedTuple):
    z: Array
    tt: Array
    sa: Array
    sx: Array
    q_te: Array
    q_var: Array
    low: Array
    up: Array
    adv: Array
    cash: Array
    turn: Array
    stress: Array
    sector: Array
    te: Array
    var: Array


def _safe(on: Array, s: Array) -> Array:
    return jnp.where(on > 0, s, 1.0)


def sigma_times(p: Params, v: Array) -> Array:
    """``Sigma @ v`` in factor form (never the n x n matrix)."""
    return p["L"] @ (p["L"].T @ v) + p["d"] ** 2 * v


def slacks(p: Params, x: Array) -> Slacks:
    """Every constraint slack at ``x`` (a constraint holds strictly when its slack > 0)."""
    z = jnp.sum(p["e"] * x, axis=1)
    tt = jnp.sum(p["mask"] * x, axis=1)
    a = p["wa"] + z
    xw = p["wx"] + z
    sa, sx = sigma_times(p, a), sigma_times(p, xw)
    q_te, q_var = a @ sa, xw @ sx
    return Slacks(
        z=z,
        tt=tt,
        sa=sa,
        sx=sx,
        q_te=q_te,
        q_var=q_var,
        low=x,
        up=p["ub"] - x,
        adv=p["adv"] - tt,
        cash=p["room"] - jnp.sum(z),
        turn=p["turn"] - jnp.sum(tt),
        stress=p["Rrhs"] + p["R"] @ z,
        sector=p["Crhs"] - p["C"] @ z,
        te=p["te2"] - q_te,
        var=p["var2"] - q_var,
    )


def min_slack(p: Params, s: Slacks) -> Array:
    """Smallest slack of an active constraint, each relative to its own scale."""
    big = jnp.inf
    ub = jnp.maximum(p["ub"], 1e-300)
    parts = [
        jnp.min(jnp.where(p["mask"] > 0, jnp.minimum(s.low, s.up) / ub, big)),
        jnp.min(jnp.where(p["any"] > 0, s.adv / jnp.maximum(p["adv"], 1e-300), big)),
        s.cash / (1e-3 + jnp.abs(p["room"])),
        s.turn / (1e-3 + jnp.abs(p["turn"])),
        jnp.min(jnp.where(p["Ron"] > 0, s.stress / (1e-3 + jnp.abs(p["Rrhs"])), big)),
        jnp.min(jnp.where(p["Con"] > 0, s.sector / (1e-6 + jnp.abs(p["Crhs"])), big)),
        jnp.where(p["te_on"] > 0, s.te / p["te2"], big),
        jnp.where(p["var_on"] > 0, s.var / p["var2"], big),
    ]
    return jnp.min(jnp.stack(parts))


def objective_bps(p: Params, x: Array, s: Slacks) -> Array:
    """``F(x)`` in bps of NAV."""
    tt = jnp.maximum(s.tt, 0.0)
    return SCALE * (
        p["gamma"] * s.q_te
        + p["cost"] @ tt
        + p["impact"] @ (tt * jnp.sqrt(tt))
        + jnp.sum(p["lin"] * x)
    )


def barrier_value(p: Params, x: Array, t: Array) -> Array:
    """``t * F(x) - sum log(slacks)``; ``+inf`` outside the strict interior."""
    s = slacks(p, x)
    m = p["mask"]
    logs = (
        jnp.sum(m * (jnp.log(_safe(m, s.low)) + jnp.log(_safe(m, s.up))))
        + jnp.sum(p["any"] * jnp.log(_safe(p["any"], s.adv)))
        + jnp.log(jnp.maximum(s.cash, 1e-300))
        + jnp.log(jnp.maximum(s.turn, 1e-300))
        + jnp.sum(p["Ron"] * jnp.log(_safe(p["Ron"], s.stress)))
        + jnp.sum(p["Con"] * jnp.log(_safe(p["Con"], s.sector)))
        + p["te_on"] * jnp.log(_safe(p["te_on"], s.te))
        + p["var_on"] * jnp.log(_safe(p["var_on"], s.var))
    )
    val = t * objective_bps(p, x, s) - logs
    return jnp.where(min_slack(p, s) > 0, val, jnp.inf)


def _block_solver(p: Params, delta: Array, alpha: Array, beta: Array) -> Any:
    """Closed-form inverse of each block ``diag(delta) + alpha e e' + beta 1 1'``."""
    e, one = p["e"], p["mask"]
    dinv = 1.0 / delta
    g11 = jnp.sum(e * e * dinv, axis=1)
    g12 = jnp.sum(e * one * dinv, axis=1)
    g22 = jnp.sum(one * one * dinv, axis=1)
    # M = (I + C G)^-1 C with C = diag(alpha, beta)
    a11, a12 = 1.0 + alpha * g11, alpha * g12
    a21, a22 = beta * g12, 1.0 + beta * g22
    det = a11 * a22 - a12 * a21
    m11, m12 = a22 * alpha / det, -a12 * beta / det
    m21, m22 = -a21 * alpha / det, a11 * beta / det

    def solve(v: Array) -> Array:
        w = dinv * v
        s1 = jnp.sum(e * w, axis=1)
        s2 = jnp.sum(one * w, axis=1)
        c1 = m11 * s1 + m12 * s2
        c2 = m21 * s1 + m22 * s2
        return w - dinv * (e * c1[:, None] + one * c2[:, None])

    return solve


def newton_step(p: Params, x: Array, t: Array) -> tuple[Array, Array, Array]:
    """Newton direction of the barrier function at ``x``, the squared decrement and the
    central-path tangent ``dx*/dt = -H^-1 grad F``."""
    s = slacks(p, x)
    m, e = p["mask"], p["e"]
    ts = t * SCALE
    ste = _safe(p["te_on"], s.te)
    svar = _safe(p["var_on"], s.var)
    sadv = _safe(p["any"], s.adv)
    sR = _safe(p["Ron"], s.stress)
    sC = _safe(p["Con"], s.sector)
    kappa = ts * p["gamma"] + p["te_on"] / ste + p["var_on"] / svar
    tt = jnp.where(p["any"] > 0, jnp.maximum(s.tt, 1e-300), 1.0)
    g_z = (
        2.0 * (ts * p["gamma"] + p["te_on"] / ste) * s.sa
        + 2.0 * p["var_on"] / svar * s.sx
        + 1.0 / s.cash
        - p["R"].T @ (p["Ron"] / sR)
        + p["C"].T @ (p["Con"] / sC)
    )
    g_t = ts * (p["cost"] + 1.5 * p["impact"] * jnp.sqrt(tt)) * p["any"]
    g_t = g_t + p["any"] / sadv + 1.0 / s.turn
    lowx = _safe(m, s.low)
    upx = _safe(m, s.up)
    g = e * g_z[:, None] + m * g_t[:, None] + m * (ts * p["lin"] - 1.0 / lowx + 1.0 / upx)
    gf_z = 2.0 * SCALE * p["gamma"] * s.sa
    gf_t = SCALE * (p["cost"] + 1.5 * p["impact"] * jnp.sqrt(tt)) * p["any"]
    gf = e * gf_z[:, None] + m * (gf_t[:, None] + SCALE * p["lin"])
    delta = m * (1.0 / lowx**2 + 1.0 / upx**2) + (1.0 - m)
    alpha = 2.0 * kappa * p["d"] ** 2
    beta = p["any"] * (ts * 0.75 * p["impact"] / jnp.sqrt(tt) + 1.0 / sadv**2)
    solve = _block_solver(p, delta, alpha, beta)
    n = x.shape[0]
    ones = jnp.ones((n, 1))
    vz = jnp.concatenate(
        [
            p["L"] * jnp.sqrt(2.0 * kappa),
            p["R"].T * (jnp.sqrt(p["Ron"]) / sR),
            p["C"].T * (jnp.sqrt(p["Con"]) / sC),
            ones / s.cash,
            (jnp.sqrt(p["te_on"]) * 2.0 / ste * s.sa)[:, None],
            (jnp.sqrt(p["var_on"]) * 2.0 / svar * s.sx)[:, None],
            jnp.zeros((n, 1)),
        ],
        axis=1,
    )
    vt = jnp.zeros_like(vz).at[:, -1].set(1.0 / s.turn)
    pe, pq = solve(e), solve(m)
    p11 = jnp.sum(e * pe, axis=1)
    p12 = jnp.sum(e * pq, axis=1)
    p22 = jnp.sum(m * pq, axis=1)
    cap = (
        jnp.eye(vz.shape[1])
        + vz.T @ (p11[:, None] * vz)
        + vz.T @ (p12[:, None] * vt)
        + vt.T @ (p12[:, None] * vz)
        + vt.T @ (p22[:, None] * vt)
    )
    chol = jnp.linalg.cholesky(cap)

    def hinv(v: Array) -> Array:
        h = solve(v)
        rv = vz.T @ jnp.sum(e * h, axis=1) + vt.T @ jnp.sum(m * h, axis=1)
        c = jax.scipy.linalg.cho_solve((chol, True), rv)
        return h - (pe * (vz @ c)[:, None] + pq * (vt @ c)[:, None])

    def hmul(v: Array) -> Array:
        vzv = jnp.sum(e * v, axis=1)
        vtv = jnp.sum(m * v, axis=1)
        block = delta * v + e * (alpha * vzv)[:, None] + m * (beta * vtv)[:, None]
        low = vz @ (vz.T @ vzv + vt.T @ vtv)
        lowt = vt @ (vz.T @ vzv + vt.T @ vtv)
        return block + e * low[:, None] + m * lowt[:, None]

    dx = -hinv(g)
    dx = dx - hinv(hmul(dx) + g)  # one step of iterative refinement
    dx = dx * m
    return dx, -jnp.sum(g * dx), -hinv(gf) * m


def max_step(p: Params, x: Array, dx: Array) -> Array:
    """Largest step keeping every constraint strictly feasible (linear exactly, cones by root)."""
    s = slacks(p, x)
    m, e = p["mask"], p["e"]
    inf = jnp.inf

    def ratio(slack: Array, rate: Array, on: Array) -> Array:
        ok = (on > 0) & (rate > 0)
        return jnp.min(jnp.where(ok, slack / jnp.where(ok, rate, 1.0), inf))

    dz = jnp.sum(e * dx, axis=1)
    dt = jnp.sum(m * dx, axis=1)
    out = jnp.minimum(ratio(s.low, -dx, m), ratio(s.up, dx, m))
    out = jnp.minimum(out, ratio(s.adv, dt, p["any"]))
    out = jnp.minimum(out, ratio(s.cash, jnp.sum(dz), jnp.ones(())))
    out = jnp.minimum(out, ratio(s.turn, jnp.sum(dt), jnp.ones(())))
    out = jnp.minimum(out, ratio(s.stress, -(p["R"] @ dz), p["Ron"]))
    out = jnp.minimum(out, ratio(s.sector, p["C"] @ dz, p["Con"]))
    sdz = sigma_times(p, dz)
    qa = dz @ sdz

    def cone(slack: Array, lin: Array, on: Array) -> Array:
        # largest alpha with qa alpha^2 + lin alpha < slack
        disc = jnp.sqrt(lin**2 + 4.0 * qa * slack)
        root = jnp.where(qa > 0, 2.0 * slack / (lin + disc + 1e-300), slack / lin)
        ok = (on > 0) & ((qa > 0) | (lin > 0))
        return jnp.where(ok, root, inf)

    out = jnp.minimum(out, cone(s.te, 2.0 * (s.sa @ dz), p["te_on"]))
    return jnp.minimum(out, cone(s.var, 2.0 * (s.sx @ dz), p["var_on"]))


class State(NamedTuple):
    x: Array
    t: Array
    it: Array
    newton: Array
    done: Array
    stalls: Array


def _line_search(p: Params, x: Array, dx: Array, t: Array, slope: Array) -> Array:
    a0 = jnp.minimum(1.0, 0.99 * max_step(p, x, dx))
    f0 = barrier_value(p, x, t)

    def cond(c: tuple[Array, Array]) -> Array:
        a, k = c
        f = barrier_value(p, x + a * dx, t)
        bad = ~(f <= f0 - 0.01 * a * slope)
        return bad & (k < 60)

    a, k = jax.lax.while_loop(cond, lambda c: (0.5 * c[0], c[1] + 1), (a0, jnp.zeros((), int)))
    return jnp.where(k < 60, a, 0.0)


def barrier_solve(p: Params, x0: Array, t0: Array, cfg: Settings) -> State:
    """Follow the central path from the strictly feasible ``x0`` until ``nbar / t <= gap``."""

    def cond(st: State) -> Array:
        return (~st.done) & (st.it < cfg.max_iter)

    def body(st: State) -> State:
        dx, lam2, tangent = newton_step(p, st.x, st.t)
        last = p["nbar"] / st.t <= cfg.gap
        centered = lam2 * 0.5 <= jnp.where(last, cfg.center_tol, cfg.loose_tol)
        a = jnp.where(centered, 0.0, _line_search(p, st.x, dx, st.t, lam2))
        stalled = (~centered) & (a <= 1e-12)
        centered = centered | stalled | ~jnp.isfinite(lam2)
        finished = centered & last
        # predictor: follow the central path's tangent to the next barrier parameter
        pred = (cfg.mu - 1.0) * st.t * tangent
        pred = jnp.where(jnp.all(jnp.isfinite(pred)), pred, 0.0)
        ap = jnp.minimum(1.0, 0.9 * max_step(p, st.x, pred))
        x = jnp.where(centered, jnp.where(finished, st.x, st.x + ap * pred), st.x + a * dx)
        t = jnp.where(centered & ~finished, st.t * cfg.mu, st.t)
        return State(
            x=x,
            t=t,
            it=st.it + 1,
            newton=st.newton + jnp.where(centered, 0, 1),
            done=finished,
            stalls=st.stalls + jnp.where(stalled, 1, 0),
        )

    zero = jnp.zeros((), int)
    init = State(x0, jnp.asarray(t0, float), zero, zero, jnp.zeros((), bool), zero)
    return jax.lax.while_loop(cond, body, init)
