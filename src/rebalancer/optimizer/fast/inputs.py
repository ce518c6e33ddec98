"""Padded NumPy inputs of the fast path, read from the same values the reference solves.

The limits come from the compiled reference problem's parameters after ``update`` (cash room,
turnover and ADV caps, buy and lot bounds, risk caps, stress rows, the sector risk-share
linearization), so relaxed limits (infeasibility diagnosis), settled wash-sale groups and
tightened risk limits are seen exactly as the conic solver sees them. Costs and the risk
model come from :class:`ProblemData` (``Sigma = L L' + diag(d^2)``: for a full covariance
input ``L`` is its eigen-factor, exactly as the reference uses it).

Sizes are padded to buckets so one compiled function serves many shapes; padded instruments
have no free variable and padded stress/sector rows are switched off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rebalancer.optimizer.data import BIG, ProblemData, Shape
from rebalancer.optimizer.problem import CompiledProblem
from rebalancer.optimizer.terms.base import Arr, TradeVec
from rebalancer.optimizer.terms.constraints import (
    AdvCap,
    BuyBounds,
    CashFloor,
    LotBounds,
    Turnover,
)
from rebalancer.optimizer.terms.risk import (
    SectorRiskShare,
    StressLimit,
    TrackingErrorLimit,
    VarLimit,
)

_N_BUCKETS = (16, 32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048)
_K_BUCKETS = (1, 2, 4, 8, 16, 32)
_F_BUCKETS = (1, 2, 4, 6, 8, 12, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128)


def _up(v: int, buckets: tuple[int, ...]) -> int:
    for b in buckets:
        if v <= b:
            return b
    top = buckets[-1]
    return -(-v // top) * top


@dataclass(frozen=True, slots=True)
class Bucket:
    """Padded sizes: instruments, lots per instrument, factors, stress scenarios, sectors."""

    n: int
    lots: int
    factors: int
    scenarios: int
    sectors: int

    @staticmethod
    def of(shape: Shape) -> Bucket:
        return Bucket(
            _up(shape.n, _N_BUCKETS),
            _up(shape.lots_per_instrument, _K_BUCKETS),
            _up(shape.factors, _F_BUCKETS) if shape.factors <= 128 else _up(shape.factors, (128,)),
            _up(max(shape.scenarios, 1), _K_BUCKETS),
            _up(max(shape.budget_sectors, 1), _K_BUCKETS),
        )


def _pad(a: Arr, shape: tuple[int, ...]) -> Arr:
    out = np.zeros(shape)
    out[tuple(slice(0, s) for s in a.shape)] = a
    return out


def _value(param: Any) -> Arr:
    return np.asarray(param.value, dtype=float)


def assemble(prob: CompiledProblem, data: ProblemData) -> tuple[dict[str, Arr], Bucket]:
    """Padded arrays of the problem ``prob`` holds after ``prob.update(data)``.

    Per-lot arrays are lots-major ``(K1, n)`` (row 0 buys). The coupling rows
    ``b - Az z - At tt >= 0`` are, in order: cash, turnover, stress scenarios, sectors; ``on``
    switches padded rows off. The risk cones are ``te2`` and ``var2`` (``BIG`` squared when off).
    """
    shape = data.shape  # a property that builds the Shape: read once
    b = Bucket.of(shape)
    terms: dict[type, Any] = {type(t): t for t in prob.limits}  # one term per class
    n, K = data.lot_w.shape
    K1 = b.lots + 1
    ub = np.zeros((K1, b.n))
    ub[0, :n] = _value(terms[BuyBounds].ub)
    ub[1 : K + 1, :n] = _value(terms[LotBounds].ub).T
    adv = _pad(_value(terms[AdvCap].cap), (b.n,))
    ub[:, adv <= 0] = 0.0
    mask = (ub > 0).astype(float)
    sign = np.full((K1, 1), -1.0)
    sign[0] = 1.0
    lin = np.zeros((K1, b.n))
    lin[1 : K + 1, :n] = data.lot_tax.T
    S, J = b.scenarios, b.sectors
    rows = 2 + S + J
    Az, At = np.zeros((rows, b.n)), np.zeros((rows, b.n))
    rhs, on = np.ones(rows), np.zeros(rows)
    Az[0, :n], rhs[0], on[0] = 1.0, float(_value(terms[CashFloor].room)), 1.0
    At[1, :n], rhs[1], on[1] = 1.0, float(_value(terms[Turnover].cap)), 1.0
    stress = terms.get(StressLimit)
    if stress is not None and shape.scenarios:
        m = shape.scenarios
        Az[2 : 2 + m, :n], rhs[2 : 2 + m] = -_value(stress.returns), _value(stress.rhs)
        on[2 : 2 + m] = 1.0
    sector = terms.get(SectorRiskShare)
    if sector is not None and shape.budget_sectors:
        nj = shape.budget_sectors
        coef = _value(sector.coef)
        Az[2 + S : 2 + S + nj, :n], rhs[2 + S : 2 + S + nj] = coef, _value(sector.rhs)
        on[2 + S : 2 + S + nj] = (np.abs(coef).max(axis=1) > 0).astype(float)
    te = float(_value(terms[TrackingErrorLimit].cap))
    var = float(_value(terms[VarLimit].cap))
    te_on = float(te < BIG * (1 - 1e-12))
    var_on = float(var * data.z_alpha < BIG * (1 - 1e-12))
    p: dict[str, Arr] = {
        "ub": ub,
        "mask": mask,
        "e": mask * sign,
        "any": (mask.sum(axis=0) > 0).astype(float),
        "lin": lin,
        "cost": _pad(data.cost, (b.n,)),
        "impact": _pad(data.impact, (b.n,)),
        "adv": adv,
        "wa": _pad(data.w - data.target, (b.n,)),
        "wx": _pad(data.w, (b.n,)),
        "L": _pad(data.factor_load, (b.n, b.factors)),
        "d": _pad(data.specific_sd, (b.n,)),
        "gamma": np.asarray(data.gamma),
        "Az": Az,
        "At": At,
        "b": rhs,
        "on": np.concatenate([on, (te_on, var_on)]),
        "te2": np.asarray(max(te, 1e-12) ** 2),
        "var2": np.asarray(max(var, 1e-12) ** 2),
    }
    return p, b


def trade_from(x: Arr, data: ProblemData) -> TradeVec:
    """The unpadded trade of a padded ``(K1, n)`` solution (clipped to the bounds)."""
    n, K = data.lot_w.shape
    buy = np.clip(x[0, :n], 0.0, data.buy_ub)
    lot = np.clip(x[1 : K + 1, :n].T, 0.0, data.lot_ub)
    return TradeVec(np.ascontiguousarray(buy), np.ascontiguousarray(lot))


def warm_from(t: TradeVec, b: Bucket) -> Arr:
    """Padded warm-start array of a previous trade."""
    n, K = t.lot_sell.shape
    x = np.zeros((b.lots + 1, b.n))
    x[0, :n] = t.buy
    x[1 : K + 1, :n] = t.lot_sell.T
    return x


def has_cones(p: dict[str, Arr]) -> bool:
    """Whether a tracking-error or VaR limit is active (the solve then carries the two risk-cone
    rows, :attr:`.iterate.Settings.cones`)."""
    return bool(np.asarray(p["on"])[-2:].any())
