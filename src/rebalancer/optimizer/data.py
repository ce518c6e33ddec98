"""NumPy view of one request: every array the terms need, in fractions of NAV.

Lots are stored padded per instrument in ``(n, K)`` arrays (``K`` = most lots of any one
instrument), so the compiled problem depends only on the shape ``(n, K, k, m, J)`` and the lot
to instrument map is structural (row ``i`` holds the lots of instrument ``i``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from operator import itemgetter
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.model import CASH
from rebalancer.domain.wash_sale import is_wash_sale_loss
from rebalancer.optimizer.memo import derived, frozen
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
    lot_present: NDArray[np.bool_]
    """Real (not padding) lot slots, (n, K)."""
    lot_names: list[str]
    """Lot ids of the real slots in row-major order (``lot_ids`` where ``lot_present``)."""
    lot_loss: NDArray[np.bool_]
    """Lots whose sale is a loss for the wash-sale rule (amount realized net of selling
    costs below the basis; :func:`rebalancer.domain.wash_sale.is_wash_sale_loss`), (n, K)."""
    group_index: NDArray[np.int64]
    """Wash-sale group of each instrument as an index into ``group_names``, (n,)."""
    group_names: list[str]
    """Wash-sale groups, sorted."""
    sector_index: NDArray[np.int64]
    """Sector of each instrument as an index into ``sector_names`` (sorted), (n,)."""
    sector_names: list[str]
    asset_index: NDArray[np.int64]
    """Asset class of each instrument as an index into ``asset_names`` (sorted), (n,)."""
    asset_names: list[str]
    budget_mask: NDArray[np.bool_]
    """Instruments of each budgeted sector, (J, n)."""
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


@dataclass(frozen=True, slots=True)
class RequestColumns:
    """Columns of a request read once and shared by the request checks and
    :func:`build_data` (``validation.check_request`` returns them)."""

    lot_instrument: list[str]
    lot_quantity: list[float]
    lot_cost_basis: list[float]
    lot_acquired: list[date]
    lot_id: list[str]
    risk: Arr | None = None
    """``risk_model.covariance`` or ``risk_model.factor_exposures`` as floats (request
    order), when already converted."""


_LOT_FIELDS = ("instrument", "quantity", "cost_basis", "acquired", "lot_id")
_INSTRUMENT_FIELDS = (
    "id",
    "price",
    "wash_sale_group",
    "half_spread_bps",
    "adv_shares",
    "daily_volatility",
    "sector",
    "asset_class",
    "lot_size",
)


def _columns(models: list[Any], names: tuple[str, ...]) -> list[list[Any]]:
    """Field ``name`` of every model, per name (read from the models' ``__dict__``, where
    pydantic keeps field values: about half the time of attribute access)."""
    rows = [m.__dict__ for m in models]
    return [list(map(itemgetter(name), rows)) for name in names]


def request_columns(req: AnalyzeRequest, risk: Arr | None = None) -> RequestColumns:
    """The lot columns of ``req`` in request order."""
    inst, qty, basis, acq, ids = _columns(req.portfolio.lots, _LOT_FIELDS)
    return RequestColumns(inst, qty, basis, acq, ids, risk)


def _risk_factor(
    req: AnalyzeRequest, order: list[str], given: Arr | None = None
) -> tuple[Arr, Arr]:
    """Return ``(L, s)`` with ``Sigma = L L' + diag(s^2)`` in the instrument order ``order``
    (``given``: the covariance or factor exposures already converted to floats)."""
    rm = req.risk_model
    memo = derived(rm)
    key = ("factor", tuple(order))
    hit = memo.get(key)
    if hit is None:
        hit = _factor_arrays(req, order, given)
        frozen(*hit)
        memo[key] = hit
    return hit  # type: ignore[no-any-return]


def _factor_arrays(req: AnalyzeRequest, order: list[str], given: Arr | None) -> tuple[Arr, Arr]:
    """:func:`_risk_factor` without the memo."""
    rm = req.risk_model
    perm: slice | NDArray[np.int64] = slice(None)
    if rm.instruments != order:
        pos = {inst: n for n, inst in enumerate(rm.instruments)}
        perm = np.array([pos[i] for i in order], dtype=int)
    if isinstance(rm, CovarianceRiskModel):
        cov = given if given is not None else np.asarray(rm.covariance, dtype=float)
        if not isinstance(perm, slice):
            cov = cov[np.ix_(perm, perm)]
        lam, vec = np.linalg.eigh(cov)
        return vec * np.sqrt(np.clip(lam, 0.0, None)), np.zeros(len(order))
    b = (given if given is not None else np.asarray(rm.factor_exposures, dtype=float))[perm]
    lam, vec = np.linalg.eigh(np.asarray(rm.factor_covariance, dtype=float))
    load = b @ (vec * np.sqrt(np.clip(lam, 0.0, None)))
    spec = np.sqrt(np.asarray(rm.specific_variance, dtype=float)[perm])
    return load, spec


def _codes(labels: list[str]) -> tuple[list[str], NDArray[np.int64]]:
    """Sorted distinct labels and each label's index into them."""
    names = sorted(set(labels))
    pos = {name: k for k, name in enumerate(names)}
    return names, np.fromiter(map(pos.__getitem__, labels), np.int64, len(labels))


def _lot_arrays(
    rows: NDArray[np.int64], n: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], int]:
    """Column of each lot (its position among its instrument's lots, in request order), the
    row-major order of the lots and the number of columns ``K``."""
    if rows.size == 0:
        return rows.copy(), rows.copy(), 1
    order = np.argsort(rows, kind="stable")
    counts = np.bincount(rows, minlength=n)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    cols = np.empty_like(rows)
    cols[order] = np.arange(rows.size) - np.repeat(starts, counts)
    return cols, order, max(1, int(counts.max()))


def build_data(req: AnalyzeRequest, columns: RequestColumns | None = None) -> ProblemData:
    """Turn a checked request into arrays (see :func:`validation.check_request`, whose
    :class:`RequestColumns` may be passed as ``columns`` so the lots are read once)."""
    pol = req.policy
    insts = req.instruments
    ids, price_in, group_in, spread_in, adv_in, vol_in, sector, asset_class, lot_size_in = _columns(
        insts, _INSTRUMENT_FIELDS
    )
    idx = {inst: n for n, inst in enumerate(ids)}
    n = len(ids)
    price = np.array(price_in, dtype=float)
    cols_in = columns if columns is not None else request_columns(req)
    inst_in, q_list, basis_in = cols_in.lot_instrument, cols_in.lot_quantity, cols_in.lot_cost_basis
    acq_in, lot_id_in = cols_in.lot_acquired, cols_in.lot_id
    m = len(inst_in)
    rows = np.fromiter(map(idx.__getitem__, inst_in), np.int64, m)
    cols, row_major, K = _lot_arrays(rows, n)
    q_in = np.array(q_list, dtype=float)
    qty = np.bincount(rows, weights=q_in, minlength=n) if rows.size else np.zeros(n)
    cash = float(req.portfolio.cash)
    nav = cash + float(qty @ price)
    if nav <= 0:
        raise InvalidInput("portfolio NAV is zero; there is nothing to rebalance", ["portfolio"])
    groups = [g or i for g, i in zip(group_in, ids, strict=True)]
    group_names = sorted(set(groups))
    gpos = {g: k for k, g in enumerate(group_names)}
    group_index = np.array([gpos[g] for g in groups], dtype=np.int64)
    as_of = req.as_of
    since = as_of - timedelta(days=pol.wash_sale_days)
    today = as_of.toordinal()
    acquired = np.fromiter(map(date.toordinal, acq_in), np.int64, m)
    recent = {groups[idx[b.instrument]] for b in req.recent_buys if since <= b.date <= as_of}
    fresh = (acquired >= since.toordinal()) & (acquired <= today)
    recent |= {groups[r] for r in np.unique(rows[fresh]).tolist()}
    id_grid = np.full((n, K), None, dtype=object)
    lot_id_arr = np.array(lot_id_in, dtype=object) if m else np.empty(0, dtype=object)
    id_grid[rows, cols] = lot_id_arr
    lot_ids: list[list[str | None]] = id_grid.tolist()
    lot_qty, lot_basis = np.zeros((n, K)), np.zeros((n, K))
    held = np.zeros((n, K), dtype=np.int64)
    present = np.zeros((n, K), dtype=bool)
    lot_qty[rows, cols] = q_in
    lot_basis[rows, cols] = basis_in
    held[rows, cols] = today - acquired
    present[rows, cols] = True
    lot_long = present & (held > pol.long_term_days)
    half_spread_bps = np.array(spread_in, dtype=float)
    selling_bps = half_spread_bps + pol.commission_bps
    lot_loss = present & is_wash_sale_loss(price[:, None], lot_basis, selling_bps[:, None])
    adv_shares = np.array(adv_in, dtype=float)
    no_sell = set(pol.no_sell)
    sellable = np.array([i not in no_sell for i in ids], dtype=bool) & (adv_shares > 0)
    recent_rows = np.array([g in recent for g in groups], dtype=bool)
    blocked_mask = lot_loss & recent_rows[:, None]
    allowed = present & sellable[:, None] & ~blocked_mask
    gain = (price[:, None] - lot_basis) * lot_qty
    wait = pol.long_term_days + 1 - held
    defer = allowed & (gain > 0) & ~lot_long & (wait > 0) & (wait <= pol.lt_wait_days)
    saved = (pol.short_term_rate - pol.long_term_rate) * gain
    wait_cost = pol.lt_wait_cost_bps_per_day * 1e-4 * wait * lot_qty * price[:, None]
    defer &= saved > wait_cost
    allowed &= ~defer
    deferred = [
        DeferredInfo(
            str(lot_ids[r][c]),
            ids[r],
            as_of + timedelta(days=int(wait[r, c])),
            int(wait[r, c]),
            float(saved[r, c]),
            float(wait_cost[r, c]),
        )
        for r, c in zip(*np.nonzero(defer), strict=True)
    ]
    blocked = [str(lot_ids[r][c]) for r, c in zip(*np.nonzero(blocked_mask), strict=True)]
    lot_ub = np.where(allowed, lot_qty * price[:, None] / nav, 0.0)
    lot_w = lot_qty * price[:, None] / nav
    lot_rate = np.where(lot_long, pol.long_term_rate, pol.short_term_rate)
    gain_frac = np.where(lot_qty > 0, 1.0 - lot_basis / price[:, None], 0.0)
    target = np.array([req.targets.get(i, 0.0) for i in ids])
    substitutes = {s for inst in insts for s in inst.substitutes}
    no_buy = set(pol.no_buy)
    has_target = target > 0
    adv_value = adv_shares * price
    # a trade never exceeds the NAV: an open cap is BIG, not 1e9 (which the conic solver
    # cannot scale: it answered optimal_inaccurate on a 2-instrument case)
    adv_cap = np.minimum(pol.max_adv_fraction * adv_value / nav, BIG)
    named = np.array([i in substitutes and i not in no_buy for i in ids], dtype=bool)
    not_no_buy = np.array([i not in no_buy for i in ids], dtype=bool)
    buy_ok = ((has_target & not_no_buy) | named) & (adv_value > 0)
    if not (pol.raise_cash == 0 or pol.raise_cash_allow_buys):
        buy_ok[:] = False
    vol = np.array(vol_in, dtype=float)
    impact = np.where(
        adv_value > 0,
        pol.impact_coefficient * vol * np.sqrt(nav / np.maximum(adv_value, 1e-300)),
        0.0,
    )
    load, spec = _risk_factor(req, ids, cols_in.risk)
    sectors = sorted(pol.max_sector_risk_share)
    scen = pol.stress_scenarios
    stress = np.array([[s.returns.get(i, 0.0) for i in ids] for s in scen]).reshape(len(scen), n)
    sector_names, sector_index = _codes(sector)
    asset_names, asset_index = _codes(asset_class)
    spos = {name: k for k, name in enumerate(sector_names)}
    budget_codes = np.array([spos.get(sec, -1) for sec in sectors], dtype=np.int64)
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
        lot_size=np.array(lot_size_in, dtype=float),
        sector=sector,
        asset_class=asset_class,
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
        cost=np.full(n, pol.commission_bps / 1e4) + half_spread_bps / 1e4,
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
        lot_present=present,
        lot_names=lot_id_arr[row_major].tolist(),
        lot_loss=lot_loss,
        group_index=group_index,
        group_names=group_names,
        sector_index=sector_index,
        sector_names=sector_names,
        asset_index=asset_index,
        asset_names=asset_names,
        budget_mask=budget_codes[:, None] == sector_index[None, :],
        policy_fields=fields,
        max_adv_fraction=pol.max_adv_fraction,
        min_trade_value=pol.min_trade_value,
        min_net_benefit=pol.min_net_benefit,
    )
