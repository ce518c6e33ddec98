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


def colsum(a: Array) -> Array:
    """Sum over the short leading axis (lots) as unrolled row additions.

    The same numbers as ``a.sum(axis=0)``, but elementwise: XLA fuses it into the kernels that
    produce ``a`` and use the sum, instead of a reduction kernel of its own (on CPU every kernel
    of the interior-point loop costs a few microseconds of dispatch, more than its arithmetic).
    """
    out = a[0]
    for k in range(1, a.shape[0]):
        out = out + a[k]
    return out


def materialize(v: Array) -> Array:
    """``v``, computed into a buffer of its own before its users run.

    XLA on CPU fuses the elementwise producers of a matrix-vector product into the product and
    re-evaluates them once per output row (``r`` times the arithmetic, read in the product's
    order): measured, the two products ``U' h`` of one iteration took more time than the rest of
    it together. ``lax.optimization_barrier`` is removed before fusion on CPU; a conditional
    whose predicate is known only at run time is a fusion boundary. Both branches return ``v``
    unless its first entry is NaN (then the whole vector is NaN, which the iteration rejects
    like any non-finite direction). Under ``vmap`` the conditional becomes a select (no
    boundary)."""
    return jax.lax.cond(jnp.isnan(v[0]), lambda u: u + v[0], lambda u: u, v)


def factor(
    e: Array,
    m: Array,
    delta: Array,
    alpha: Array,
    beta: Array,
    vz: Array,
    vt: Array,
    cinv: Array,
    tz: int = 0,
) -> Callable[[Array], tuple[Array, Array, Array]]:
    """A solver ``v -> (H^-1 v, c, beta * m'H^-1 v)`` for the matrix above (``v`` of shape
    ``(K1, n)``). ``c = C U' H^-1 v`` are the low-rank multipliers: for a coupling row with
    weight ``lam / s`` it is ``(lam / s) * (row gradient)' dx`` computed without forming the
    huge weight, and ``beta * m'dx`` is the same for the per-instrument rows.

    The z- and t-space columns are stacked (``V = [vz; vt]``, ``2n x r``) so that each product
    with the low-rank part is one matrix-vector product. ``tz`` says that the first ``tz``
    columns of ``vt`` are zero (the factor loadings have no t-space part); the small matrix
    ``C^-1 + U'B^-1 U`` then skips them (its ``r x r x 2n`` product is the largest single piece
    of arithmetic of an iteration)."""
    dinv = 1.0 / delta
    de, dm = dinv * e, dinv * m
    # e = +-m entrywise (+ buy, - sells): with P = buy part and Q = sell part of m'D^-1 m the
    # Gram matrix E'D^-1 E (E = [e m]) is [[P+Q, P-Q], [P-Q, P+Q]], determinant 4PQ exactly
    pb = dm[0]
    qs = colsum(dm[1:])
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
    vv = jnp.concatenate([vz, vt], axis=0)
    w1 = p11[:, None] * vz + p12[:, None] * vt
    w2 = p12[:, None] * vz + p22[:, None] * vt
    # U'B^-1 U = vz'w1 + vt'w2, where vt'w2 has zero rows for the zero columns of vt
    low = vz.T @ w1
    low = low + jnp.concatenate([jnp.zeros((tz, low.shape[1])), vt[:, tz:].T @ w2], axis=0)
    cap = jnp.diag(cinv) + low
    chol = jnp.linalg.cholesky(cap)
    n = e.shape[1]

    def solve(v: Array) -> tuple[Array, Array, Array]:
        w = dinv * v
        s1 = colsum(e * w)
        s2 = colsum(m * w)
        h = w - (de * (m11 * s1 + m12 * s2) + dm * (m21 * s1 + m22 * s2))
        # materialized before the product: XLA on CPU would otherwise fuse the whole
        # elementwise chain into the matrix-vector product and recompute it per output (r times)
        hh = materialize(jnp.concatenate([colsum(e * h), colsum(m * h)]))
        c = jax.scipy.linalg.cho_solve((chol, True), vv.T @ hh)
        # dx = B^-1 (v - U c) again in closed form, so that beta * m'dx comes out as the
        # block's own multiplier (no cancellation when beta is huge)
        uc = vv @ c
        y = v - (e * uc[:n] + m * uc[n:])
        w = dinv * y
        s1 = colsum(e * w)
        s2 = colsum(m * w)
        bdt = m21 * s1 + m22 * s2
        dx = w - (de * (m11 * s1 + m12 * s2) + dm * bdt)
        return dx, c, bdt

    return solve
