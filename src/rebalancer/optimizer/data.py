"""NumPy view of one request: every array the terms need, in fractions of NAV.

Lots are stored padded per instrument in ``(n, K)`` arrays (``K`` = most lots of any one
instrument), so the compiled problem depends only on the shape ``(n, K, k, m, J)`` and the lot
to instrument map is structural (row ``i`` holds the lots of instrument ``i``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray

from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.model import CASH
from rebalancer.optimizer.schemas import AnalyzeRequest, CovarianceRiskModel

Arr = NDArray[np.float64]
BIG = 10.0
"""Stand-in limit (fraction of NAV) for a limit the policy leaves open; never reached."""


@dataclass(frozen=True, slots=True)
class Shape:
    """Structural size of a problem; one compiled problem per distinct shape."""

    n: int
    lots_per_instrument: int
    factors: int
    scenarios: int
    budget_sectors: int


@dataclass(frozen=True, slots=True)
class DeferredInfo:
    lot_id: str
    instrument: str
    long_term_on: date
    days: int
    tax_saved: float
    waiting_cost: float


@dataclass(slots=True)
class ProblemData:
    """Arrays of one request. Weights and limits are fractions of NAV, money is currency."""

    ids: list[str]
    nav: float
    cash: float
    price: Arr
    w: Arr
    target: Arr
    cash_target: float
    lot_size: Arr
    sector: list[str]
    asset_class: list[str]
    groups: list[str]
    has_target: NDArray[np.bool_]
    lot_ids: list[list[str | None]]
    lot_qty: Arr
    lot_basis: Arr
    lot_w: Arr
    lot_long: NDArray[np.bool_]
    lot_rate: Arr
    lot_tax: Arr
    lot_ub: Arr
    lot_blocked_wash: list[str]
    deferred: list[DeferredInfo]
    buy_ub: Arr
    cost: Arr
    impact: Arr
    adv_cap: Arr
    factor_load: Arr
    specific_sd: Arr
    gamma: float
    cash_floor: float
    turnover_limit: float
    var_limit: float
    z_alpha: float
    te_limit: float
    stress_returns: Arr
    stress_limit: Arr
    stress_names: list[str]
    budget_sectors: list[str]
    budget_share: Arr
    recent_groups: set[str]
    max_adv_fraction: float = 0.0
    min_trade_value: float = 0.0
    min_net_benefit: float = 0.0
    policy_fields: dict[str, list[str]] = field(default_factory=dict)

    @property
    def shape(self) -> Shape:
        return Shape(
            len(self.ids),
            self.lot_w.shape[1],
            self.factor_load.shape[1],
            self.stress_returns.shape[0],
            len(self.budget_sectors),
        )

    @property
    def n(self) -> int:
        return len(self.ids)


def _risk_factor(req: AnalyzeRequest, order: list[str]) -> tuple[Arr, Arr]:
    """Return ``(L, s)`` with ``Sigma = L L' + diag(s^2)`` in the instrument order ``order``."""
    rm = req.risk_model
    pos = {inst: n for n, inst in enumerate(rm.instruments)}
    perm = np.array([pos[i] for i in order], dtype=int)
    if isinstance(rm, CovarianceRiskModel):
        cov = np.asarray(rm.covariance, dtype=float)[np.ix_(perm, perm)]
        lam, vec = np.linalg.eigh(cov)
        return vec * np.sqrt(np.clip(lam, 0.0, None)), np.zeros(len(order))
    b = np.asarray(rm.factor_exposures, dtype=float)[perm]
    lam, vec = np.linalg.eigh(np.asarray(rm.factor_covariance, dtype=float))
    load = b @ (vec * np.sqrt(np.clip(lam, 0.0, None)))
    spec = np.sqrt(np.asarray(rm.specific_variance, dtype=float)[perm])
    return load, spec


def build_data(req: AnalyzeRequest) -> ProblemData:
    """Turn a checked request into arrays (see :func:`validation.check_request`)."""
    pol = req.policy
    ids = [i.id for i in req.instruments]
    idx = {inst: n for n, inst in enumerate(ids)}
    n = len(ids)
    price = np.array([i.price for i in req.instruments])
    qty = np.zeros(n)
    per_inst: list[list[int]] = [[] for _ in range(n)]
    for k, lot in enumerate(req.portfolio.lots):
        qty[idx[lot.instrument]] += lot.quantity
        per_inst[idx[lot.instrument]].append(k)
    cash = float(req.portfolio.cash)
    nav = cash + float(qty @ price)
    if nav <= 0:
        raise InvalidInput("portfolio NAV is zero; there is nothing to rebalance", ["portfolio"])
    groups = [i.wash_sale_group or i.id for i in req.instruments]
    as_of = req.as_of
    window = timedelta(days=pol.wash_sale_days)
    recent = {
        groups[idx[b.instrument]] for b in req.recent_buys if as_of - window <= b.date <= as_of
    }
    recent |= {
        groups[idx[lot.instrument]]
        for lot in req.portfolio.lots
        if as_of - window <= lot.acquired <= as_of
    }
    K = max([1, *(len(p) for p in per_inst)])
    lot_ids: list[list[str | None]] = [[None] * K for _ in range(n)]
    lot_qty, lot_basis = np.zeros((n, K)), np.zeros((n, K))
    lot_long = np.zeros((n, K), dtype=bool)
    lot_ub = np.zeros((n, K))
    no_sell = set(pol.no_sell)
    blocked: list[str] = []
    deferred: list[DeferredInfo] = []
    for i, members in enumerate(per_inst):
        for j, k in enumerate(members):
            lot = req.portfolio.lots[k]
            lot_ids[i][j] = lot.lot_id
            lot_qty[i, j], lot_basis[i, j] = lot.quantity, lot.cost_basis
            held = (as_of - lot.acquired).days
            lot_long[i, j] = held > pol.long_term_days
            gain = (price[i] - lot.cost_basis) * lot.quantity
            allowed = ids[i] not in no_sell and req.instruments[i].adv_shares > 0
            if gain < 0 and groups[i] in recent:
                blocked.append(lot.lot_id)
                allowed = False
            wait = pol.long_term_days + 1 - held
            if allowed and gain > 0 and not lot_long[i, j] and 0 < wait <= pol.lt_wait_days:
                saved = (pol.short_term_rate - pol.long_term_rate) * gain
                cost = pol.lt_wait_cost_bps_per_day * 1e-4 * wait * lot.quantity * price[i]
                if saved > cost:
                    deferred.append(
                        DeferredInfo(
                            lot.lot_id, ids[i], as_of + timedelta(days=wait), wait, saved, cost
                        )
                    )
                    allowed = False
            lot_ub[i, j] = lot.quantity * price[i] / nav if allowed else 0.0
    lot_w = lot_qty * price[:, None] / nav
    lot_rate = np.where(lot_long, pol.long_term_rate, pol.short_term_rate)
    gain_frac = np.where(lot_qty > 0, 1.0 - lot_basis / price[:, None], 0.0)
    target = np.array([req.targets.get(i, 0.0) for i in ids])
    substitutes = {s for inst in req.instruments for s in inst.substitutes}
    has_target = np.array([req.targets.get(i, 0.0) > 0 for i in ids])
    adv_value = np.array([i.adv_shares for i in req.instruments]) * price
    adv_cap = pol.max_adv_fraction * adv_value / nav
    buy_ok = np.array(
        [
            (has_target[n_] or ids[n_] in substitutes)
            and ids[n_] not in pol.no_buy
            and adv_value[n_] > 0
            and (pol.raise_cash == 0 or pol.raise_cash_allow_buys)
            for n_ in range(n)
        ]
    )
    vol = np.array([i.daily_volatility for i in req.instruments])
    impact = np.where(
        adv_value > 0,
        pol.impact_coefficient * vol * np.sqrt(nav / np.maximum(adv_value, 1e-300)),
        0.0,
    )
    load, spec = _risk_factor(req, ids)
    sectors = sorted(pol.max_sector_risk_share)
    scen = pol.stress_scenarios
    stress = np.array([[s.returns.get(i, 0.0) for i in ids] for s in scen]).reshape(len(scen), n)
    fields = {
        "cash_floor": ["policy.min_cash_weight"]
        + (["policy.raise_cash"] if pol.raise_cash else []),
        "turnover": ["policy.max_turnover"],
        "adv_cap": ["policy.max_adv_fraction"],
    }
    return ProblemData(
        ids=ids,
        nav=nav,
        cash=cash,
        price=price,
        w=qty * price / nav,
        target=target,
        cash_target=float(req.targets.get(CASH, 0.0)),
        lot_size=np.array([float(i.lot_size) for i in req.instruments]),
        sector=[i.sector for i in req.instruments],
        asset_class=[i.asset_class for i in req.instruments],
        groups=groups,
        has_target=has_target,
        lot_ids=lot_ids,
        lot_qty=lot_qty,
        lot_basis=lot_basis,
        lot_w=lot_w,
        lot_long=lot_long,
        lot_rate=lot_rate,
        lot_tax=lot_rate * gain_frac,
        lot_ub=lot_ub,
        lot_blocked_wash=blocked,
        deferred=deferred,
        buy_ub=np.where(buy_ok, BIG, 0.0),
        cost=np.full(n, pol.commission_bps / 1e4)
        + np.array([i.half_spread_bps for i in req.instruments]) / 1e4,
        impact=impact,
        adv_cap=adv_cap,
        factor_load=load,
        specific_sd=spec,
        gamma=pol.risk_aversion,
        cash_floor=max(
            pol.min_cash_weight, (cash + pol.raise_cash) / nav if pol.raise_cash else 0.0
        ),
        turnover_limit=BIG if pol.max_turnover is None else pol.max_turnover,
        var_limit=BIG if pol.max_var is None else pol.max_var,
        z_alpha=NormalDist().inv_cdf(pol.var_confidence),
        te_limit=BIG if pol.max_tracking_error is None else pol.max_tracking_error,
        stress_returns=stress,
        stress_limit=np.array([BIG if s.max_loss is None else s.max_loss for s in scen]),
        stress_names=[s.name for s in scen],
        budget_sectors=sectors,
        budget_share=np.array([pol.max_sector_risk_share[s] for s in sectors]),
        recent_groups=recent,
        policy_fields=fields,
        max_adv_fraction=pol.max_adv_fraction,
        min_trade_value=pol.min_trade_value,
        min_net_benefit=pol.min_net_benefit,
    )
