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

Each iteration solves the condensed Newton system twice with one factorization (predictor and
Mehrotra corrector) and takes separate primal and dual steps (fraction to the boundary 0.99);
a row that holds at ``x`` gets its true value as slack. The stop is a proof: with the dual
residual moved into the bound duals the Lagrangian is stationary, so ``F(x) - F*`` is at most
the bound computed in :func:`_step` (bps of NAV). The solve ends when that bound is below
``Settings.gap``, or once an acceptable iterate (bound below ``Settings.accept``, every row
within ``feas``) stops improving; it returns the best acceptable iterate. No feasible start is
needed; an infeasible problem simply does not converge.

All functions are pure, take a dict of padded arrays ``p`` and are jit/vmap friendly; the solve
is one ``while_loop``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rebalancer.optimizer.fast.kkt import colsum, factor

jax.config.update("jax_enable_x64", True)  # type: ignore[no-untyped-call]

SCALE = 1e4
"""Objective scale (fraction of NAV -> bps), the same as the reference formulation."""

Params = dict[str, Any]
Array = Any
_TAU = 0.99
"""Fraction to the boundary. 0.99 instead of 0.995: with 0.995 a few accounts took 20-40
iterations (the slowest account sets a vmapped batch's time); measured with the cold start
below, 1,000 benchmark accounts of 50 instruments: mean 12.4 -> 11.9 iterations, slowest of
each batch of 100 17.6 -> 14.6; 30 test-factory accounts of 200 instruments: 17.3 -> 15.3
(max 40 -> 27); 500 instruments and 50-instrument test-factory accounts +0.1-0.3."""
_START_FRACTION = 0.3
"""Cold start: this fraction of each free entry's bound (capped by the ADV room per entry)."""
_DUAL_FIT = 0.25
"""Cold start: this part of the objective gradient's positive (negative) side is added to the
lower (upper) bound duals, so the first iterations start closer to dual feasibility. Measured
on the benchmark accounts: 14.1 -> 12.4 iterations on average at 50 instruments (the slowest
of a batch of 100: 19.9 -> 17.6), 14.9 -> 13.6 at 500."""


class Settings(NamedTuple):
    """Stopping rules of the interior-point method."""

    gap: float = 1e-2
    """Optimality bound (bps of NAV) that ends the iteration (1e-2 bps = 1e-6 of NAV)."""
    accept: float = 0.5
    """Optimality bound (bps of NAV) an answer must have: its objective is provably at most
    this above the optimum (0.5 bps = 5e-5 of NAV; measured errors are ~1e-8 of NAV)."""
    feas: float = 1e-11
    """Largest violation of a constraint row (fraction of NAV, cones relative to their cap)."""
    max_iter: int = 80
    cones: bool = False
    """Whether the Newton system carries the two risk-cone rows. The service sends problems with
    an active tracking-error or VaR limit to the barrier path (:func:`.inputs.has_cones`), so
    here they are always off and are left out of the low-rank part (2 of its ~18 columns: the
    ``r x r x n`` product and the ``n x r`` products shrink); a problem with a cone on then
    reports ``converged=False`` instead of a wrong answer."""
    mu0: float = 0.1
    """Starting complementarity (bps of NAV per unit of weight) of a cold start."""
    warm_mu: float = 1e-2
    """Starting complementarity of a warm start."""


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

    z: Array
    tt: Array
    sa: Array
    sx: Array
    g_a: Array
    g_g: Array
    jz: Array
    gf: Array


def rowcomb(rows: Array, w: Array) -> Array:
    """``rows.T @ w`` for a few rows (``rows`` ``(R, n)``) as unrolled elementwise terms, so that
    XLA fuses it into its users (see :func:`.kkt.colsum`)."""
    out = rows[0] * w[0]
    for j in range(1, rows.shape[0]):
        out = out + rows[j] * w[j]
    return out


def prepare(p: Params) -> Params:
    """``p`` with the loop invariants the iteration uses (computed once per solve)."""
    q = dict(p)
    q["At2"] = jnp.concatenate([p["At"], jnp.zeros((2, p["At"].shape[1]))], axis=0)
    q["npairs"] = 2.0 * jnp.sum(p["mask"]) + jnp.sum(p["any"]) + jnp.sum(p["on"])
    q["scale_g"] = jnp.concatenate([jnp.maximum(1.0, jnp.abs(p["b"])), jnp.ones(2)])
    # room to the bound, with the implied bound x <= adv (a redundant constraint may carry
    # the dual residual as well)
    q["cap"] = jnp.minimum(p["ub"], p["adv"][None, :])
    q["d2"] = p["d"] ** 2
    q["row0"] = jnp.zeros_like(p["mask"]).at[0].set(1.0)
    return q


def point(p: Params, x: Array) -> Point:
    """Trades, risk products, every constraint row value and the objective gradient at ``x``
    (``p`` from :func:`prepare`)."""
    e, m = p["e"], p["mask"]
    z = colsum(e * x)
    tt = colsum(m * x)
    a = p["wa"] + z
    xw = p["wx"] + z
    both = jnp.stack([a, xw], axis=1)
    s2 = p["L"] @ (p["L"].T @ both) + p["d2"][:, None] * both
    sa, sx = s2[:, 0], s2[:, 1]
    # every row product in one reduction: Az z, At tt, a'Sigma a, xw'Sigma xw
    prods = jnp.sum(
        jnp.concatenate([p["Az"] * z, p["At"] * tt, (a * sa)[None, :], (xw * sx)[None, :]], axis=0),
        axis=1,
    )
    rows = p["Az"].shape[0]
    g_g = jnp.concatenate(
        [
            p["b"] - prods[:rows] - prods[rows : 2 * rows],
            jnp.stack([1.0 - prods[-2] / p["te2"], 1.0 - prods[-1] / p["var2"]]),
        ]
    )
    jz = jnp.concatenate(
        [-p["Az"], (-2.0 / p["te2"]) * sa[None, :], (-2.0 / p["var2"]) * sx[None, :]], axis=0
    )
    ts = jnp.where(p["any"] > 0, jnp.maximum(tt, 0.0), 1.0)
    gz = 2.0 * SCALE * p["gamma"] * sa
    gt = SCALE * (p["cost"] + 1.5 * p["impact"] * jnp.sqrt(ts)) * p["any"]
    gf = e * gz + m * (gt + SCALE * p["lin"])
    return Point(z, tt, sa, sx, p["adv"] - tt, g_g, jz, gf)


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


def _ratios(v: Array, dv: Array) -> Array:
    """Per entry, the step to the boundary ``v + step * dv = 0`` (``inf`` where ``dv >= 0``);
    the fraction-to-the-boundary step is the minimum over all of them."""
    return jnp.where(dv < 0, -v / jnp.where(dv < 0, dv, -1.0), jnp.inf)


def _step(st: State, p: Params, pt: Point, cfg: Settings) -> State:
    """One Mehrotra predictor-corrector iteration (or the convergence test that ends).

    Written for XLA on CPU, where each kernel of the loop body costs a few microseconds of
    dispatch, more than its arithmetic at these sizes: per-instrument sums over the lots and
    combinations of a few rows are unrolled elementwise (they fuse), and the scalar
    reductions of one stage share one reduction kernel (all step lengths of a direction, all
    sums of the optimality bound)."""
    e, m, ub = p["e"], p["mask"], p["ub"]
    on_a, on_g = p["any"], p["on"]
    x, zl, zu = st.x, st.zl, st.zu
    l_a, l_g = st.l_a, st.l_g
    at2 = p["At2"]
    # slack reset: a row that holds at x gets its true value as slack (no primal residual
    # left to drift against a vanishing slack); violated rows keep their slack variable
    s_a = jnp.where((on_a > 0) & (pt.g_a > 0), pt.g_a, st.s_a)
    s_g = jnp.where((on_g > 0) & (pt.g_g > 0), pt.g_g, st.s_g)
    ux = jnp.where(m > 0, ub - x, 1.0)
    xs = jnp.where(m > 0, x, 1.0)
    # residuals: dual (x-space), primal rows, complementarity
    jtz = rowcomb(pt.jz, l_g)  # -(J_z' lam) of the coupling rows is -jtz
    jtt = -rowcomb(at2, l_g)
    rd = (pt.gf - e * jtz - m * (jtt - l_a) - zl + zu) * m
    rp_a = (pt.g_a - s_a) * on_a
    rp_g = (pt.g_g - s_g) * on_g
    npairs = p["npairs"]
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
    mu = gap / npairs
    perr = jnp.maximum(jnp.max(jnp.abs(rp_a)), jnp.max(jnp.abs(rp_g) / p["scale_g"]))
    conv = (perr <= cfg.feas) & (bound <= cfg.gap)
    # the converged evaluation (the last of every solve) needs no Newton direction: the
    # conditional skips the factorization and both solves, one iteration's work (under
    # ``vmap`` it becomes a select that computes both branches, as before)
    out: State = jax.lax.cond(
        conv,
        lambda: _finished(st, s_a, l_a, s_g, l_g, perr, bound, gap, cfg),
        lambda: _advance(
            st, p, pt, cfg, s_a, s_g, ux, xs, rd, rp_a, rp_g, gap, bound, mu, perr, conv
        ),
    )
    return out


def _finished(
    st: State,
    s_a: Array,
    l_a: Array,
    s_g: Array,
    l_g: Array,
    perr: Array,
    bound: Array,
    gap: Array,
    cfg: Settings,
) -> State:
    """The state :func:`_advance` returns for a converged iterate (no step), without its work."""
    score = jnp.where(perr <= cfg.feas, bound, jnp.inf)
    better = score < st.best
    return State(
        xz=st.xz,
        ra=jnp.stack([s_a, l_a]),
        rg=jnp.stack([s_g, l_g]),
        it=st.it,
        done=jnp.ones((), bool),
        err=jnp.stack([perr, bound, gap, jnp.zeros_like(gap)]),
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
    xs: Array,
    rd: Array,
    rp_a: Array,
    rp_g: Array,
    gap: Array,
    bound: Array,
    mu: Array,
    perr: Array,
    conv: Array,
) -> State:
    """The Newton step of :func:`_step` from its residuals."""
    e, m = p["e"], p["mask"]
    on_a, on_g = p["any"], p["on"]
    x, zl, zu = st.x, st.zl, st.zu
    l_a, l_g = st.l_a, st.l_g
    at2 = p["At2"]
    npairs = p["npairs"]
    row0 = p["row0"]
    # Newton matrix: bound terms, per-instrument curvature, low-rank coupling
    delta = jnp.where(m > 0, zl / xs + zu / ux, 1.0)
    kappa = SCALE * p["gamma"] + l_g[-2] / p["te2"] + l_g[-1] / p["var2"]
    ts = jnp.where(on_a > 0, jnp.maximum(pt.tt, 1e-300), 1.0)
    sa_safe = jnp.where(on_a > 0, s_a, 1.0)
    beta_imp = on_a * SCALE * 0.75 * p["impact"] / jnp.sqrt(ts)
    beta = beta_imp + on_a * l_a / sa_safe
    alpha = 2.0 * kappa * p["d2"]
    sg_safe = jnp.where(on_g > 0, s_g, 1.0)
    live = (on_g > 0) & (l_g > 0)
    cinv_g = jnp.where(live, jnp.minimum(sg_safe / jnp.where(live, l_g, 1.0), 1e100), 1.0)
    wg = live.astype(float)
    # rows in the Newton system: all, or all but the two cone rows (see Settings.cones)
    keep = at2.shape[0] if cfg.cones else at2.shape[0] - 2
    wk = wg[:keep, None]
    vz = jnp.concatenate([p["L"], (pt.jz[:keep] * wk).T], axis=1)
    vt = jnp.concatenate([jnp.zeros_like(p["L"]), (-at2[:keep] * wk).T], axis=1)
    cinv = jnp.concatenate([jnp.full(p["L"].shape[1], 0.5) / kappa, cinv_g[:keep]])
    solve = factor(e, m, delta, alpha, beta, vz, vt, cinv, tz=p["L"].shape[1])

    nf = p["L"].shape[1]
    ratio_a = on_a * l_a / jnp.maximum(sa_safe * beta_imp + l_a, 1e-300)
    jzt = jnp.concatenate([pt.jz, -at2], axis=1)

    def direction(rs_a: Array, rs_g: Array, rl: Array, ru: Array) -> tuple[Array, ...]:
        w_a = on_a * (rs_a + l_a * rp_a) / sa_safe
        w_g = on_g * (rs_g + l_g * rp_g) / sg_safe
        rhs = (
            -rd - e * rowcomb(pt.jz, w_g) + m * (rowcomb(at2, w_g) + w_a) - (rl / xs - ru / ux) * m
        )
        dx, c, bdt = solve(rhs)
        dx = dx * m
        dz = colsum(e * dx)
        dt = colsum(m * dx)
        # row duals from the multipliers (no huge lam / s factor formed as s -> 0)
        dl_a = on_a * (ratio_a * bdt - w_a)
        c_g = jnp.concatenate([c[nf:], jnp.zeros(at2.shape[0] - keep)])
        dl_g = on_g * (-w_g - c_g * wg)
        ds_a = on_a * (rp_a - dt)
        ds_g = on_g * (rp_g + jzt @ jnp.concatenate([dz, dt]))
        dzl = -m * (rl + zl * dx) / xs
        dzu = m * (zu * dx - ru) / ux
        # every primal and every dual step length: the box and per-instrument rows in one
        # reduction over (2, K1, n), the few coupling rows apart
        box = jnp.min(
            jnp.stack(
                [
                    jnp.minimum(
                        jnp.minimum(_ratios(xs, dx), _ratios(ux, -dx)), _ratios(sa_safe, ds_a)
                    ),
                    jnp.minimum(
                        jnp.minimum(_ratios(zl, dzl), _ratios(zu, dzu)), _ratios(l_a, dl_a)
                    ),
                ]
            ),
            axis=(1, 2),
        )
        rows = jnp.stack([jnp.min(_ratios(sg_safe, ds_g)), jnp.min(_ratios(l_g, dl_g))])
        amax = jnp.minimum(jnp.minimum(box, rows), 1.0)
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
    steps = jnp.where(conv, 0.0, jnp.minimum(1.0, _TAU * amax))
    ok = jnp.all(jnp.isfinite(steps)) & jnp.all(jnp.isfinite(dx))
    steps = jnp.where(ok, steps, 0.0)
    a, b = steps[0], steps[1]
    err = jnp.stack([perr, bound, gap, a])
    score = jnp.where(perr <= cfg.feas, bound, jnp.inf)
    better = score < st.best
    # once an acceptable answer is in hand, a blocked step or an iteration that does not
    # improve the bound ends the solve (the rounding noise floor of the dual residual)
    ok_best = jnp.minimum(score, st.best) <= cfg.accept
    return State(
        xz=st.xz + jnp.stack([a * dx, b * dzl, b * dzu]),
        ra=jnp.stack([s_a + a * ds_a, l_a + b * dl_a]),
        rg=jnp.stack([s_g + a * ds_g, l_g + b * dl_g]),
        it=st.it + jnp.where(conv, 0, 1),
        done=conv
        | ~ok
        | (jnp.maximum(a, b) < 1e-12)
        | (ok_best & ((jnp.minimum(a, b) < 0.1) | ~better)),
        err=err,
        best=jnp.where(better, score, st.best),
        best_x=jnp.where(better, x, st.best_x),
    )


def initial_state(p: Params, x0: Array, mu0: Array) -> State:
    """Primal-dual start at ``x0`` (strictly inside the box): slacks are the row values kept
    away from zero, duals are ``mu0`` over their slack; the bound duals also carry
    ``_DUAL_FIT`` of the objective gradient's sign-split parts (a move toward dual
    feasibility that keeps them positive)."""
    m = p["mask"]
    pt = point(p, x0)
    ux = jnp.where(m > 0, p["ub"] - x0, 1.0)
    xs = jnp.where(m > 0, x0, 1.0)
    floor_a = 0.1 * jnp.abs(p["adv"]) + 1e-8
    s_a = jnp.where(p["any"] > 0, jnp.maximum(pt.g_a, floor_a), 1.0)
    scale_g = jnp.concatenate([jnp.maximum(jnp.abs(p["b"]), 1e-3), jnp.ones(2)])
    s_g = jnp.where(p["on"] > 0, jnp.maximum(pt.g_g, 0.1 * scale_g), 1.0)
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
        rg=jnp.stack([s_g, p["on"] * mu0 / s_g]),
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


def warm_point(p: Params, warm: Array) -> Array:
    """A previous answer moved strictly inside this problem's box (bounds may have closed)."""
    m, ub = p["mask"], p["ub"]
    x0 = cold_start(p)
    lo = 1e-3 * x0
    xw = jnp.clip(warm, lo, ub - jnp.maximum(1e-3 * ub, lo))
    return m * (0.9 * xw + 0.1 * x0)


def run(p: Params, st: State, cfg: Settings) -> State:
    """Iterate until converged, stopped or ``max_iter``."""

    def cond(s: State) -> Array:
        return (~s.done) & (s.it < cfg.max_iter)

    def body(s: State) -> State:
        return _step(s, p, point(p, s.x), cfg)

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
    p = prepare(p)
    x0 = jnp.where(use, warm_point(p, warm), cold_start(p))
    mu0 = jnp.where(use, cfg.warm_mu, cfg.mu0)
    st = run(p, initial_state(p, x0, mu0), cfg)
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
