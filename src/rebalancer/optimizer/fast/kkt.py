"""The Newton (KKT) system of the fast path, solved in ``O(n K r + n r^2 + r^3)``.

Variables are laid out lots-major: ``x`` has shape ``(K1, n)`` (row 0 buys, rows 1.. the lots of
each instrument, column ``i`` one instrument), so every per-instrument sum is a sum over the
short leading axis of ``n``-long rows. With ``e`` the net-trade signs (+1 buy, -1 sell) and
``m`` the mask of free entries, the condensed Newton matrix of the interior-point method is::

    H = blockdiag_i( diag(delta_i) + alpha_i e_i e_i' + beta_i m_i m_i' ) + U C U'
    U[:, :, j] = e * uz[j] + m * ut[j]                 (r columns)
    C = diag(1 / cinv)                                  (r weights)

``delta`` holds the bound terms (``zl/x + zu/(ub - x)``), ``alpha`` the specific risk
(``2 kappa d^2``), ``beta`` the impact curvature and the ADV-row term, ``uz`` the factor
loadings and the z-space gradients of the coupling rows (cash, stress, sectors, TE, VaR), ``ut``
the t-space ones (turnover). Each ``K1 x K1`` block is inverted in closed form (a rank-2
Woodbury) and ``U C U'`` through one ``r x r`` Cholesky of ``C^-1 + U' B^-1 U``: ``H`` is never
formed. The weights enter inverted (``cinv = s / lam`` of a coupling row), so a row whose slack
goes to zero at the answer makes the small matrix better conditioned, not worse.

The columns of ``U`` are constant during a solve (factor loadings, the rows' coefficients)
except for a 0/1 weight per column (a row whose dual is zero leaves the system), so they are
built once (:class:`LowRank`, in the layouts XLA's CPU products are fastest in) and the
weights ``wu`` scale the small matrix and the multipliers instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

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

    XLA on CPU fuses elementwise producers into their consumers and re-evaluates them there:
    per-instrument numbers computed from the lot sums were recomputed for every entry of each
    ``(K1, n)`` and ``(r, n)`` consumer (and, fused into a matrix-vector product, once per
    output row). ``lax.optimization_barrier`` is removed before fusion on CPU; a conditional
    whose predicate is known only at run time is a fusion boundary. Both branches return ``v``
    unless its first entry is NaN (then the whole array is NaN, which the iteration rejects
    like any non-finite direction). Under ``vmap`` the conditional becomes a select (no
    boundary)."""
    first = v.reshape(-1)[0]
    return jax.lax.cond(jnp.isnan(first), lambda u: u + first, lambda u: u, v)


class LowRank(NamedTuple):
    """The columns of ``U`` in the layouts the products use (``r`` columns, of which the
    first ``r - q`` have no t-space part). XLA's CPU products are several times faster with
    the contracted axis last on the left and first on the right (measured at 512 x 16: ``A'B``
    with both ``(n, r)`` 32 us, ``A B`` with ``A`` ``(r, n)`` 17 us), so both layouts are
    kept."""

    uu: Array
    """``(r, 2n)``: row ``j`` is ``[uz_j, ut_j]`` (``ut_j = 0`` for ``j < r - q``)."""
    vz: Array
    """``(n, r)``: ``uz'``."""
    vt: Array
    """``(n, q)``: the t-space parts of the last ``q`` columns."""


def low_rank(uz: Array, ut: Array) -> LowRank:
    """:class:`LowRank` of the z-space rows ``uz`` ``(r, n)`` and the t-space rows ``ut``
    ``(q, n)`` of the last ``q`` columns."""
    r, q = uz.shape[0], ut.shape[0]
    utf = jnp.concatenate([jnp.zeros((r - q, uz.shape[1])), ut], axis=0)
    return LowRank(jnp.concatenate([uz, utf], axis=1), uz.T, ut.T)


def factor(
    e: Array,
    m: Array,
    delta: Array,
    alpha: Array,
    beta: Array,
    u: LowRank,
    cinv: Array,
    wu: Array,
) -> Callable[[Array], tuple[Array, Array, Array, Array, Array]]:
    """A solver ``v -> (dx, c, beta * m'dx, e'dx, m'dx)`` with ``dx = H^-1 v`` for the matrix
    above (``v`` of shape ``(K1, n)``) and ``U = U0 diag(wu)`` (``U0`` from ``u``).
    ``c = C U' H^-1 v`` are the low-rank multipliers: for a coupling row with weight
    ``lam / s`` it is ``(lam / s) * (row gradient)' dx`` computed without forming the huge
    weight, and ``beta * m'dx`` is the same for the per-instrument rows. A column with
    ``wu = 0`` needs ``cinv = 1`` (its multiplier is then 0)."""
    dinv = 1.0 / delta
    dm = dinv * m
    # e = +-m entrywise (+ buy, - sells): with P = buy part and Q = sell part of m'D^-1 m the
    # Gram matrix G = E'D^-1 E (E = [e m]) is [[P+Q, P-Q], [P-Q, P+Q]], determinant 4PQ exactly
    pb = dm[0]
    qs = colsum(dm[1:])
    g11 = pb + qs
    g12 = pb - qs
    pq4 = 4.0 * pb * qs
    idet = 1.0 / (1.0 + (alpha + beta) * g11 + alpha * beta * pq4)
    # computed once into a buffer: XLA would otherwise re-evaluate these per-instrument
    # numbers (from the lot sums) inside every (r, n) and (K1, n) consumer
    k1 = e.shape[0]
    pk = materialize(jnp.concatenate([dinv, jnp.stack([g11, g12, pq4, idet])]))
    dinv = pk[:k1]
    g11, g12, pq4, idet = (pk[k1 + j] for j in range(4))
    # per block B = D + E C E' (C = diag(alpha, beta)): B^-1 = D^-1 - D^-1 E M E'D^-1 with
    # M = (C^-1 + G)^-1, and E'B^-1 = Q E'D^-1 with Q = C^-1 M; all in closed form without
    # cancellation (products of the numbers above)
    q11 = (1.0 + beta * g11) * idet
    q12 = -beta * g12 * idet
    q21 = -alpha * g12 * idet
    q22 = (1.0 + alpha * g11) * idet
    m11, m12, m22 = alpha * q11, alpha * q12, beta * q22
    # E'B^-1 E = Q G (positive semidefinite by construction: its determinant is 4PQ / det)
    p11 = (g11 + beta * pq4) * idet
    p12 = g12 * idet
    p22 = (g11 + alpha * pq4) * idet
    de, dm = dinv * e, dinv * m
    n = e.shape[1]
    uz, ut = u.uu[:, :n], u.uu[:, n:]
    q = u.vt.shape[1]
    # U0'B^-1 U0 = (uz P11 + ut P12) uz' + [0 | (uz P12 + ut P22) ut_q']
    low = (uz * p11 + ut * p12) @ u.vz
    lowt = (uz * p12 + ut * p22) @ u.vt
    low = low + jnp.concatenate([jnp.zeros((low.shape[0], low.shape[1] - q)), lowt], axis=1)
    cap = jnp.diag(cinv) + wu[:, None] * low * wu[None, :]
    chol = jnp.linalg.cholesky(cap)

    def solve(v: Array) -> tuple[Array, Array, Array, Array, Array]:
        w = dinv * v
        s1, s2 = jnp.sum(jnp.stack([e * w, m * w]), axis=1)  # E'D^-1 v
        hh = jnp.concatenate([q11 * s1 + q12 * s2, q21 * s1 + q22 * s2])  # E'B^-1 v
        c = wu * jax.scipy.linalg.cho_solve((chol, True), wu * (u.uu @ hh))
        # dx = B^-1 (v - U c) in closed form (E'D^-1 U c = G [uc_z, uc_t]), so that
        # beta * m'dx comes out as the block's own multiplier (no cancellation when beta is
        # huge), and e'dx, m'dx as Q E'D^-1 (v - U c)
        uc = c @ u.uu
        ucz, uct = uc[:n], uc[n:]
        r1 = s1 - (g11 * ucz + g12 * uct)
        r2 = s2 - (g12 * ucz + g11 * uct)
        bdt = m12 * r1 + m22 * r2
        dx = dinv * (v - e * ucz - m * uct) - (de * (m11 * r1 + m12 * r2) + dm * bdt)
        return dx, c, bdt, q11 * r1 + q12 * r2, q21 * r1 + q22 * r2

    return solve
