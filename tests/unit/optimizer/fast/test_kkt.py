"""The structured Newton solve and the compile-cache configuration of the fast path."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rebalancer.optimizer.fast import default_cache_dir
from rebalancer.optimizer.fast.kkt import colsum, factor, low_rank, materialize
from rebalancer.optimizer.fast.pdip import Solution, pack, rowcomb, unpack
from rebalancer.optimizer.fast.solver import CACHE_ENV


def _dense(e, m, delta, alpha, beta, vz, vt, weights):  # type: ignore[no-untyped-def]
    K1, n = m.shape
    size = K1 * n
    H = np.zeros((size, size))
    for i in range(n):
        idx = np.arange(K1) * n + i
        H[np.ix_(idx, idx)] += (
            np.diag(delta[:, i])
            + alpha[i] * np.outer(e[:, i], e[:, i])
            + beta[i] * np.outer(m[:, i], m[:, i])
        )
    U = np.stack([(e * vz[:, j] + m * vt[:, j]).reshape(-1) for j in range(vz.shape[1])], 1)
    return H + U @ np.diag(weights) @ U.T, U


def _system(rng, K1, n, r, spread=3.0):  # type: ignore[no-untyped-def]
    """A random condensed Newton system: lot masks, bound terms, per-instrument curvatures,
    low-rank columns and their weights (``spread`` decades of weights)."""
    m = (rng.random((K1, n)) > 0.3).astype(float)
    e = m * np.r_[1.0, -np.ones(K1 - 1)][:, None]
    delta = np.where(m > 0, 10.0 ** rng.uniform(-2, spread - 2, (K1, n)), 1.0)
    alpha, beta = rng.random(n) * 10, 10.0 ** rng.uniform(-2, spread - 1, n)
    vz, vt = rng.normal(size=(n, r)), rng.normal(size=(n, r))
    weights = 10.0 ** rng.uniform(-2, spread, r)
    return e, m, delta, alpha, beta, vz, vt, weights


@pytest.mark.parametrize(("seed", "spread"), [(0, 3.0), (1, 3.0), (2, 9.0), (3, 9.0)])
def test_structured_solve_matches_the_dense_newton_matrix(seed: int, spread: float) -> None:
    """``spread`` = decades of the bound and row weights (9: the end of a solve, where active
    rows have lam / s ~ 1e9 and variables at a bound have huge bound terms)."""
    rng = np.random.default_rng(seed)
    K1, n, r = 5, 9, 4
    e, m, delta, alpha, beta, vz, vt, weights = _system(rng, K1, n, r, spread)
    H, U = _dense(e, m, delta, alpha, beta, vz, vt, weights)
    v = rng.normal(size=(K1, n))
    u = low_rank(vz.T, vt.T)
    dx, c, bdt, dz, dt = factor(e, m, delta, alpha, beta, u, 1.0 / weights, np.ones(r))(v)
    dx = np.asarray(dx)
    want = np.linalg.solve(H, v.reshape(-1)).reshape(K1, n)
    tol = 1e-9 if spread < 5 else 1e-6
    assert np.abs(dx - want).max() <= tol * np.abs(want).max()
    # the per-instrument sums come out of the block algebra, not from summing dx
    scale = np.abs(want).max()
    assert np.abs(np.asarray(dz) - (e * want).sum(axis=0)).max() <= tol * scale
    assert np.abs(np.asarray(dt) - (m * want).sum(axis=0)).max() <= tol * scale
    if spread < 5:  # the multipliers are the weighted row products of the direction
        assert np.allclose(np.asarray(c), weights * (U.T @ want.reshape(-1)), rtol=1e-8)
        assert np.allclose(np.asarray(bdt), beta * (m * want).sum(axis=0), rtol=1e-8)


@pytest.mark.parametrize("tz", [1, 3])
def test_zero_t_columns_are_skipped_without_changing_the_solve(tz: int) -> None:
    """``tz`` leading columns of ``vt`` are zero (the factor loadings): the small matrix skips
    them and the solve still matches the dense Newton matrix."""
    rng = np.random.default_rng(10 + tz)
    K1, n, r = 5, 11, 4
    e, m, delta, alpha, beta, vz, vt, weights = _system(rng, K1, n, r)
    vt[:, :tz] = 0.0
    H, _ = _dense(e, m, delta, alpha, beta, vz, vt, weights)
    v = rng.normal(size=(K1, n))
    u = low_rank(vz.T, vt[:, tz:].T)
    dx = np.asarray(factor(e, m, delta, alpha, beta, u, 1.0 / weights, np.ones(r))(v)[0])
    want = np.linalg.solve(H, v.reshape(-1)).reshape(K1, n)
    assert np.abs(dx - want).max() <= 1e-9 * np.abs(want).max()


def test_columns_weighted_out_leave_the_system() -> None:
    """A column with weight ``wu = 0`` (a coupling row whose dual is zero) and ``cinv = 1``
    solves as if the column were not there, and its multiplier is 0."""
    rng = np.random.default_rng(21)
    K1, n, r = 5, 10, 5
    e, m, delta, alpha, beta, vz, vt, weights = _system(rng, K1, n, r)
    wu = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    cinv = np.where(wu > 0, 1.0 / weights, 1.0)
    keep = wu > 0
    H, U = _dense(e, m, delta, alpha, beta, vz[:, keep], vt[:, keep], weights[keep])
    v = rng.normal(size=(K1, n))
    dx, c, *_ = factor(e, m, delta, alpha, beta, low_rank(vz.T, vt.T), cinv, wu)(v)
    want = np.linalg.solve(H, v.reshape(-1)).reshape(K1, n)
    assert np.abs(np.asarray(dx) - want).max() <= 1e-9 * np.abs(want).max()
    c = np.asarray(c)
    assert np.all(c[~keep] == 0.0)
    assert np.allclose(c[keep], weights[keep] * (U.T @ want.reshape(-1)), rtol=1e-8)


def test_unrolled_sums_and_materialize_keep_the_values() -> None:
    rng = np.random.default_rng(7)
    a, rows, w = rng.normal(size=(5, 9)), rng.normal(size=(6, 9)), rng.normal(size=6)
    assert np.allclose(np.asarray(colsum(a)), a.sum(axis=0), rtol=1e-14, atol=1e-14)
    assert np.allclose(np.asarray(rowcomb(rows, w)), rows.T @ w, rtol=1e-13, atol=1e-13)
    v = rng.normal(size=8)
    assert np.array_equal(np.asarray(jax.jit(materialize)(v)), v)


def test_compile_cache_directory_is_configurable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "jax"))
    assert default_cache_dir() == tmp_path / "jax"
    monkeypatch.setenv(CACHE_ENV, "off")
    assert default_cache_dir() is None
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("REBALANCER_DATA_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "jax-cache"
    monkeypatch.delenv("REBALANCER_DATA_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "rebalancer" / "jax"


def test_packed_solution_round_trips() -> None:
    """A compiled solve hands back one flat array; unpacking gives the same solution."""
    rng = np.random.default_rng(3)
    x = rng.random((5, 8))
    sol = Solution(
        x=jnp.asarray(x),
        objective=jnp.asarray(-1.25e-3),
        iterations=jnp.asarray(13),
        converged=jnp.asarray(True),
        bound=jnp.asarray(4e-3),
        perr=jnp.asarray(2e-13),
        warm_used=jnp.asarray(False),
    )
    out = unpack(np.asarray(pack(sol)), x.shape)
    assert np.array_equal(out.x, x)
    assert (out.objective, out.bound, out.perr) == (-1.25e-3, 4e-3, 2e-13)
    assert out.iterations == 13 and out.converged is True and out.warm_used is False
