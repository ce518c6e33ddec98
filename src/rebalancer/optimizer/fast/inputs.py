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
_F_BUCKETS = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)


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


def _term(prob: CompiledProblem, kind: type) -> Any:
    for term in prob.limits:
        if isinstance(term, kind):
            return term
    return None


def _pad(a: Arr, shape: tuple[int, ...]) -> Arr:
    out = np.zeros(shape)
    out[tuple(slice(0, s) for s in a.shape)] = a
    return out


def _value(param: Any) -> Arr:
    return np.asarray(param.value, dtype=float)


def assemble(prob: CompiledProblem, data: ProblemData) -> tuple[dict[str, Arr], Bucket]:
    """Padded arrays of the problem ``prob`` holds after ``prob.update(data)``."""
    b = Bucket.of(data.shape)
    n, K = data.lot_w.shape
    K1 = b.lots + 1
    ub = np.zeros((n, K + 1))
    ub[:, 0] = _value(_term(prob, BuyBounds).ub)
    ub[:, 1:] = _value(_term(prob, LotBounds).ub)
    adv = _value(_term(prob, AdvCap).cap)
    ub[adv <= 0] = 0.0
    ub = _pad(ub, (b.n, K1))
    mask = (ub > 0).astype(float)
    sign = np.r_[1.0, -np.ones(b.lots)]
    lin = np.zeros((n, K + 1))
    lin[:, 1:] = data.lot_tax
    p: dict[str, Arr] = {
        "ub": ub,
        "mask": mask,
        "e": mask * sign,
        "any": (mask.sum(axis=1) > 0).astype(float),
        "lin": _pad(lin, (b.n, K1)),
        "cost": _pad(data.cost, (b.n,)),
        "impact": _pad(data.impact, (b.n,)),
        "adv": _pad(adv, (b.n,)),
        "wa": _pad(data.w - data.target, (b.n,)),
        "wx": _pad(data.w, (b.n,)),
        "L": _pad(data.factor_load, (b.n, b.factors)),
        "d": _pad(data.specific_sd, (b.n,)),
        "gamma": np.asarray(data.gamma),
        "room": _value(_term(prob, CashFloor).room),
        "turn": _value(_term(prob, Turnover).cap),
    }
    te = float(_value(_term(prob, TrackingErrorLimit).cap))
    var = float(_value(_term(prob, VarLimit).cap))
    p["te_on"] = np.asarray(float(te < BIG * (1 - 1e-12)))
    p["te2"] = np.asarray(te**2)
    p["var_on"] = np.asarray(float(var * data.z_alpha < BIG * (1 - 1e-12)))
    p["var2"] = np.asarray(var**2)
    stress = _term(prob, StressLimit)
    R, Rrhs = np.zeros((b.scenarios, b.n)), np.ones(b.scenarios)
    Ron = np.zeros(b.scenarios)
    if stress is not None and data.shape.scenarios:
        m = data.shape.scenarios
        R[:m, :n], Rrhs[:m], Ron[:m] = _value(stress.returns), _value(stress.rhs), 1.0
    sector = _term(prob, SectorRiskShare)
    C, Crhs = np.zeros((b.sectors, b.n)), np.ones(b.sectors)
    Con = np.zeros(b.sectors)
    if sector is not None and data.shape.budget_sectors:
        J = data.shape.budget_sectors
        coef = _value(sector.coef)
        C[:J, :n], Crhs[:J] = coef, _value(sector.rhs)
        Con[:J] = (np.abs(coef).max(axis=1) > 0).astype(float)
    p.update(R=R, Rrhs=Rrhs, Ron=Ron, C=C, Crhs=Crhs, Con=Con)
    nbar = 2 * mask.sum() + p["any"].sum() + 2 + Ron.sum() + Con.sum() + p["te_on"] + p["var_on"]
    p["nbar"] = np.asarray(float(nbar))
    return p, b


def trade_from(x: Arr, data: ProblemData) -> TradeVec:
    """The unpadded trade of a padded solution row block (clipped to the bounds)."""
    n, K = data.lot_w.shape
    buy = np.clip(x[:n, 0], 0.0, data.buy_ub)
    lot = np.clip(x[:n, 1 : K + 1], 0.0, data.lot_ub)
    return TradeVec(np.ascontiguousarray(buy), np.ascontiguousarray(lot))


def warm_from(t: TradeVec, b: Bucket) -> Arr:
    """Padded warm-start array of a previous trade."""
    n, K = t.lot_sell.shape
    x = np.zeros((b.n, b.lots + 1))
    x[:n, 0] = t.buy
    x[:n, 1 : K + 1] = t.lot_sell
    return x
