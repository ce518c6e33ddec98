"""The Newton (KKT) system of the fast path, solved in ``O(n K r + n r^2 + r^3)``.

Variables are laid out lots-major: ``x`` has shape ``(K1, n)`` (row 0 buys, rows 1.. the lots of
each instrument, column ``i`` one instrument), so every per-instrument sum is a sum over the
short leading axis of ``n``-long rows. With ``e`` the net-trade signs (+1 buy, -1 sell) and
``m`` the mask of free entries, the condensed Newton matrix of the interior-point method is::

    H = blockdiag_i( diag(delta_i) + alpha_i e_i e_i' + beta_i m_i m_i' ) + U C U'
    U[:, :, j] = e * vz[:, j] + m * vt[:, j]           (r columns)
    C = diag(1 / cinv)                                  (r weights)

``delta`` holds the bound terms (``zl/x + zu/(ub - x)``), ``alpha`` the specific risk
(``2 kappa d^2``), ``beta`` the impact curvature and the ADV-row term, ``vz`` the factor
loadings and the z-space gradients of the coupling rows (cash, stress, sectors, TE, VaR), ``vt``
the t-space ones (turnover). Each ``K1 x K1`` block is inverted in closed form (a rank-2
Woodbury) and ``U C U'`` through one ``r x r`` Cholesky of ``C^-1 + U' B^-1 U``: ``H`` is never
formed. The weights enter inverted (``cinv = s / lam`` of a coupling row), so a row whose slack
goes to zero at the answer makes the small matrix better conditioned, not worse.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Array = Any


def factor(
    e: Array,
    m: Array,
    delta: Array,
    alpha: Array,
    beta: Array,
    vz: Array,
    vt: Array,
    cinv: Array,
) -> Callable[[Array], tuple[Array, Array, Array]]:
    """A solver ``v -> (H^-1 v, c, beta * m'H^-1 v)`` for the matrix above (``v`` of shape
    ``(K1, n)``). ``c = C U' H^-1 v`` are the low-rank multipliers: for a coupling row with
    weight ``lam / s`` it is ``(lam / s) * (row gradient)' dx`` computed without forming the
    huge weight, and ``beta * m'dx`` is the same for the per-instrument rows."""
    dinv = 1.0 / delta
    de, dm = dinv * e, dinv * m
    # e = +-m entrywise (+ buy, - sells): with P = buy part and Q = sell part of m'D^-1 m the
    # Gram matrix E'D^-1 E (E = [e m]) is [[P+Q, P-Q], [P-Q, P+Q]], determinant 4PQ exactly
    pb = dm[0]
    qs = jnp.sum(dm[1:], axis=0)
    g11 = pb + qs
    g12 = pb - qs
    g22 = g11
    # per block M = (C^-1 + G)^-1 with C = diag(alpha, beta), without cancellation
    det = 1.0 + (alpha + beta) * g11 + 4.0 * alpha * beta * pb * qs
    m11 = alpha * (1.0 + beta * g22) / det
    m12 = -alpha * beta * g12 / det
    m21 = m12
    m22 = beta * (1.0 + alpha * g11) / det
    # E'B^-1 E = (I + G C)^-1 G in closed form (positive semidefinite by construction: its
    # determinant is 4PQ / det)
    p11 = (g11 + 4.0 * beta * pb * qs) / det
    p12 = g12 / det
    p22 = (g11 + 4.0 * alpha * pb * qs) / det
    wz = p11[:, None] * vz + p12[:, None] * vt
    wt = p12[:, None] * vz + p22[:, None] * vt
    cap = jnp.diag(cinv) + vz.T @ wz + vt.T @ wt
    chol = jnp.linalg.cholesky(cap)

    def solve(v: Array) -> tuple[Array, Array, Array]:
        w = dinv * v
        s1 = jnp.sum(e * w, axis=0)
        s2 = jnp.sum(m * w, axis=0)
        h = w - (de * (m11 * s1 + m12 * s2) + dm * (m21 * s1 + m22 * s2))
        hz = jnp.sum(e * h, axis=0)
        ht = jnp.sum(m * h, axis=0)
        c = jax.scipy.linalg.cho_solve((chol, True), vz.T @ hz + vt.T @ ht)
        # dx = B^-1 (v - U c) again in closed form, so that beta * m'dx comes out as the
        # block's own multiplier (no cancellation when beta is huge)
        y = v - (e * (vz @ c) + m * (vt @ c))
        w = dinv * y
        s1 = jnp.sum(e * w, axis=0)
        s2 = jnp.sum(m * w, axis=0)
        bdt = m21 * s1 + m22 * s2
        dx = w - (de * (m11 * s1 + m12 * s2) + dm * bdt)
        return dx, c, bdt

    return solve
