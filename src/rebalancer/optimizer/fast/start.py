"""Strictly feasible starting points and the whole jit-able solve of one padded problem.

A barrier method must start strictly inside every constraint. Candidates are mixes of three
directions, each strictly inside the bounds and ADV caps: a little of every allowed buy, a
little of every allowed sell (for cash floors above current cash) and a move toward the
targets (for risk limits the current portfolio breaks). The candidate with the largest
relative slack wins; when none is strictly feasible the fast path reports it and the engine
falls back to the conic solver (which also proves infeasibility when that is the reason).
A warm start (the previous solution of the same account, e.g. from the previous wash-sale
round) is pulled 10 % toward the best candidate, which keeps it strictly inside when it is
feasible at all.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rebalancer.optimizer.fast.barrier import (
    Array,
    Params,
    Settings,
    barrier_solve,
    min_slack,
    objective_bps,
    slacks,
)

_GRID = jnp.array(
    list(
        itertools.product(
            (0.0, 1e-2),  # buys
            (-1.0, 0.0, 1e-3, 1e-2, 0.1, 0.3, 0.6, 0.95),  # sells (-1: solved for)
            (0.0, 0.25, 0.5, 0.9),  # toward targets
        )
    )
)
_EPS = 1e-4


class Solution(NamedTuple):
    """Output of one fast solve (arrays; batched under ``vmap``)."""

    x: Array
    objective: Array
    """F(x) as a fraction of NAV."""
    iterations: Array
    newton: Array
    t: Array
    converged: Array
    start_ok: Array
    warm_used: Array
    slack: Array
    """Smallest relative slack at the answer (> 0: strictly feasible)."""
    stalls: Array


def _directions(p: Params) -> tuple[Array, Array, Array]:
    m, ub, adv = p["mask"], p["ub"], p["adv"]
    lots = m[:, 1:] * ub[:, 1:]
    held = jnp.sum(lots, axis=1)
    cap = jnp.where(p["any"] > 0, adv, 0.0)
    small = jnp.minimum(jnp.minimum(ub[:, 0], cap), 0.01)
    buy = jnp.zeros_like(ub).at[:, 0].set(0.25 * m[:, 0] * small)
    frac = jnp.minimum(0.5, 0.25 * cap / jnp.maximum(held, 1e-300))
    sell = jnp.zeros_like(ub).at[:, 1:].set(lots * frac[:, None])
    gap = -p["wa"]
    want_buy = jnp.minimum(jnp.maximum(gap, 0.0), 0.25 * jnp.minimum(ub[:, 0], cap))
    want_sell = jnp.minimum(jnp.maximum(-gap, 0.0), 0.25 * jnp.minimum(held, cap))
    gfrac = jnp.minimum(0.45, want_sell / jnp.maximum(held, 1e-300))
    toward = jnp.zeros_like(ub).at[:, 0].set(want_buy * m[:, 0])
    toward = toward.at[:, 1:].set(lots * gfrac[:, None])
    return buy, sell, toward


def feasible_start(p: Params) -> tuple[Array, Array]:
    """The best strictly interior candidate and its relative slack (> 0 when usable)."""
    buy, sell, toward = _directions(p)
    base = _EPS * (buy + sell)

    e = p["e"]
    sold = jnp.sum(sell)

    def score(theta: Array) -> tuple[Array, Array]:
        x = base + theta[0] * buy + theta[2] * toward
        # sells halfway between what the cash floor needs and what turnover allows
        lo = (jnp.sum(e * x) - p["room"]) / jnp.maximum(sold, 1e-300)
        hi = (p["turn"] - jnp.sum(p["mask"] * x)) / jnp.maximum(sold, 1e-300)
        mid = jnp.clip(0.5 * (jnp.maximum(lo, 0.0) + jnp.minimum(hi, 0.95)), 0.0, 0.95)
        x = x + jnp.where(theta[1] < 0, mid, theta[1]) * sell
        return x, min_slack(p, slacks(p, x))

    xs, scores = jax.vmap(score)(_GRID)
    best = jnp.argmax(jnp.where(jnp.isnan(scores), -jnp.inf, scores))
    return xs[best], scores[best]


def solve_padded(p: Params, warm: Array, use_warm: Array, t_warm: Array, cfg: Settings) -> Solution:
    """Start, follow the central path, report (pure; ``jit`` and ``vmap`` it)."""
    x_start, s_start = feasible_start(p)
    xw = 0.9 * jnp.clip(warm * p["mask"], 0.0, p["ub"]) + 0.1 * x_start
    s_warm = min_slack(p, slacks(p, xw))
    warm_ok = (use_warm > 0) & (s_warm > 0) & (s_start > 0)
    x0 = jnp.where(warm_ok, xw, x_start)
    t0 = jnp.where(warm_ok, t_warm, cfg.t0)
    st = barrier_solve(p, x0, t0, cfg)
    s = slacks(p, st.x)
    slack = min_slack(p, s)
    start_ok = s_start > 0
    return Solution(
        x=st.x,
        objective=objective_bps(p, st.x, s) / 1e4,
        iterations=st.it,
        newton=st.newton,
        t=st.t,
        converged=st.done & start_ok & (slack > 0),
        start_ok=start_ok,
        warm_used=warm_ok,
        slack=slack,
        stalls=st.stalls,
    )
