"""NumPy view of one request: every array the terms need, in fractions of NAV.

Lots are stored padded per instrument in ``(n, K)`` arrays (``K`` = most lots of any one
instrument), so the compiled problem depends only on the shape ``(n, K, k, m, J)`` and the lot
to instrument map is structural (row ``i`` holds the lots of instrument ``i``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from itertools import chain, repeat
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.model import CASH
from rebalancer.domain.wash_sale import is_wash_sale_loss
from rebalancer.optimizer.memo import by_content, derived, frozen
from rebalancer.optimizer.schemas import AnalyzeRequest, CovarianceRiskModel
from rebalancer.optimizer.validation import RequestColumns, request_columns

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
        return _sqrt_factor(cov), np.zeros(len(order))
    b = (given if given is not None else np.asarray(rm.factor_exposures, dtype=float))[perm]
    f = np.asarray(rm.factor_covariance, dtype=float)
    load = b @ by_content("sqrt_factor", f, _shared_sqrt_factor)
    spec = np.sqrt(np.asarray(rm.specific_variance, dtype=float)[perm])
    return load, spec


def _sqrt_factor(cov: Arr) -> Arr:
    """``R = V sqrt(max(lam, 0))`` of ``cov = V diag(lam) V'`` (``cov = R R'`` when ``cov``
    is positive semidefinite)."""
    lam, vec = np.linalg.eigh(cov)
    root: Arr = vec * np.sqrt(np.clip(lam, 0.0, None))
    return root


def _shared_sqrt_factor(cov: Arr) -> Arr:
    """:func:`_sqrt_factor`, read-only (it is shared through :func:`memo.by_content`)."""
    root = _sqrt_factor(cov)
    frozen(root)
    return root


def _codes(labels: list[str]) -> tuple[list[str], NDArray[np.int64]]:
    """Sorted distinct labels and each label's index into them."""
    distinct = set(labels)
    # distinct labels (e.g. instrument ids as wash-sale groups) often come sorted already:
    # sorting the list then takes one pass, sorting the set a full sort
    names = sorted(labels if len(distinct) == len(labels) else distinct)
    if len(names) == 1:
        return names, np.zeros(len(labels), dtype=np.int64)
    if names == labels:  # distinct and sorted already (e.g. instrument ids as groups)
        return names, np.arange(len(labels), dtype=np.int64)
    pos = {name: k for k, name in enumerate(names)}
    return names, np.fromiter(map(pos.__getitem__, labels), np.int64, len(labels))


def _mask(row: dict[str, int], names: Iterable[str], n: int) -> NDArray[np.bool_]:
    """The rows of the instruments ``names`` (ids not in ``row`` are skipped), (n,)."""
    mask = np.zeros(n, dtype=bool)
    hits = [r for r in map(row.get, names) if r is not None]
    if hits:
        mask[hits] = True
    return mask


def _cells(mask: NDArray[np.bool_]) -> Iterable[tuple[int, int]]:
    """``(row, column)`` of every true cell of the 2-d ``mask``, row-major, as Python ints."""
    rows, cols = mask.nonzero()
    return zip(rows.tolist(), cols.tolist(), strict=True)


def _deferred(
    defer: NDArray[np.bool_],
    lot_ids: list[list[str | None]],
    ids: list[str],
    as_of: date,
    amounts: tuple[NDArray[np.int64], Arr, Arr],
) -> list[DeferredInfo]:
    """The deferred lots (``defer``, (n, K)); ``amounts``: the days each lot waits to turn
    long term, the tax saved by waiting and the waiting cost (currency), each (n, K)."""
    if not defer.any():
        return []
    days, saved, cost = (a[defer].tolist() for a in amounts)
    return [
        DeferredInfo(str(lot_ids[r][c]), ids[r], as_of + timedelta(days=d), d, s, w)
        for (r, c), d, s, w in zip(_cells(defer), days, saved, cost, strict=True)
    ]


def _lookup(values: Mapping[str, float], ids: list[str]) -> Arr:
    """``values[i]`` for every id (0 when absent), (n,)."""
    return np.fromiter(map(values.get, ids, repeat(0.0)), float, len(ids))


def _lot_arrays(
    rows: NDArray[np.int64], n: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], int]:
    """Column of each lot (its position among its instrument's lots, in request order), the
    row-major order of the lots and the number of columns ``K``."""
    if rows.size == 0:
        return rows.copy(), rows.copy(), 1
    order = np.argsort(rows, kind="stable")
    counts = np.bincount(rows, minlength=n)
    starts = np.cumsum(counts) - counts
    cols = np.empty_like(rows)
    cols[order] = np.arange(rows.size) - starts[rows[order]]
    return cols, order, max(1, int(counts.max()))


def _grid(flat: NDArray[np.int64], values: NDArray[Any], shape: tuple[int, int]) -> NDArray[Any]:
    """An array of ``shape`` holding ``values`` at the flat positions ``flat``, 0 elsewhere."""
    out = np.zeros(shape[0] * shape[1], dtype=values.dtype)
    out[flat] = values
    return out.reshape(shape)


def build_data(req: AnalyzeRequest, columns: RequestColumns | None = None) -> ProblemData:
    """Turn a checked request into arrays (see :func:`validation.check_request`, whose
    :class:`RequestColumns` may be passed as ``columns`` so the request is read once)."""
    pol = req.policy
    cols_in = columns if columns is not None else request_columns(req)
    inst = cols_in.inst
    ids, idx, price = inst.ids, inst.row, inst.price
    n = len(ids)
    acq_in, lot_id_in = cols_in.lot_acquired, cols_in.lot_id
    m = len(lot_id_in)
    rows = cols_in.lot_row
    if rows is None:  # not checked: raises KeyError for the unknown instrument, as it did
        rows = np.fromiter(map(idx.__getitem__, cols_in.lot_instrument), np.int64, m)
    cols, row_major, K = _lot_arrays(rows, n)
    q_in = cols_in.lot_quantity
    qty = np.bincount(rows, weights=q_in, minlength=n) if rows.size else np.zeros(n)
    cash = float(req.portfolio.cash)
    nav = cash + float(qty @ price)
    if nav <= 0:
        raise InvalidInput("portfolio NAV is zero; there is nothing to rebalance", ["portfolio"])
    group_in = inst.wash_sale_group
    groups = [g or i for g, i in zip(group_in, ids, strict=True)] if any(group_in) else ids[:]
    group_names, group_index = _codes(groups)
    as_of = req.as_of
    since = as_of - timedelta(days=pol.wash_sale_days)
    today = as_of.toordinal()
    acquired = np.fromiter(map(date.toordinal, acq_in), np.int64, m)
    recent = {groups[idx[b.instrument]] for b in req.recent_buys if since <= b.date <= as_of}
    fresh = (acquired >= since.toordinal()) & (acquired <= today)
    recent |= {groups[r] for r in rows[fresh].tolist()}
    flat = rows * K + cols  # position of each lot in the row-major (n, K) grids
    id_grid = np.full(n * K, None, dtype=object)
    lot_id_arr = np.array(lot_id_in, dtype=object) if m else np.empty(0, dtype=object)
    id_grid[flat] = lot_id_arr
    lot_ids: list[list[str | None]] = id_grid.reshape(n, K).tolist()
    lot_qty = _grid(flat, q_in, (n, K))
    lot_basis = _grid(flat, cols_in.lot_cost_basis, (n, K))
    held = _grid(flat, today - acquired, (n, K))
    present = _grid(flat, np.ones(m, dtype=bool), (n, K))
    lot_long = present & (held > pol.long_term_days)
    pcol = price[:, None]
    half_spread_bps = inst.half_spread_bps
    selling_bps = half_spread_bps + pol.commission_bps
    lot_loss = present & is_wash_sale_loss(pcol, lot_basis, selling_bps[:, None])
    adv_shares = inst.adv_shares
    sellable = ~_mask(idx, pol.no_sell, n) & (adv_shares > 0)
    recent_rows = (
        np.fromiter(map(recent.__contains__, groups), bool, n) if recent else np.zeros(n, bool)
    )
    blocked_mask = lot_loss & recent_rows[:, None]
    allowed = present & sellable[:, None] & ~blocked_mask
    gain = (pcol - lot_basis) * lot_qty
    wait = pol.long_term_days + 1 - held
    defer = allowed & (gain > 0) & ~lot_long & (wait > 0) & (wait <= pol.lt_wait_days)
    saved = (pol.short_term_rate - pol.long_term_rate) * gain
    wait_cost = pol.lt_wait_cost_bps_per_day * 1e-4 * wait * lot_qty * pcol
    defer &= saved > wait_cost
    allowed &= ~defer
    deferred = _deferred(defer, lot_ids, ids, as_of, (wait, saved, wait_cost))
    blocked = [str(lot_ids[r][c]) for r, c in _cells(blocked_mask)]
    lot_w = lot_qty * pcol / nav
    lot_ub = np.where(allowed, lot_w, 0.0)
    lot_rate = np.where(lot_long, pol.long_term_rate, pol.short_term_rate)
    gain_frac = np.where(lot_qty > 0, 1.0 - lot_basis / pcol, 0.0)
    target = _lookup(req.targets, ids)
    no_buy = _mask(idx, pol.no_buy, n)
    has_target = target > 0
    adv_value = adv_shares * price
    # a trade never exceeds the NAV: an open cap is BIG, not 1e9 (which the conic solver
    # cannot scale: it answered optimal_inaccurate on a 2-instrument case)
    adv_cap = np.minimum(pol.max_adv_fraction * adv_value / nav, BIG)
    named = _mask(idx, chain.from_iterable(inst.substitutes), n)
    buy_ok = (has_target | named) & ~no_buy & (adv_value > 0)
    if not (pol.raise_cash == 0 or pol.raise_cash_allow_buys):
        buy_ok[:] = False
    vol = inst.daily_volatility
    impact = np.where(
        adv_value > 0,
        pol.impact_coefficient * vol * np.sqrt(nav / np.maximum(adv_value, 1e-300)),
        0.0,
    )
    load, spec = _risk_factor(req, ids, cols_in.risk)
    sectors = sorted(pol.max_sector_risk_share)
    scen = pol.stress_scenarios
    stress = np.zeros((len(scen), n))
    for k, sc in enumerate(scen):
        stress[k] = _lookup(sc.returns, ids)
    sector_names, sector_index = _codes(inst.sector)
    asset_names, asset_index = _codes(inst.asset_class)
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
        lot_size=np.array(inst.lot_size, dtype=float),
        sector=inst.sector,
        asset_class=inst.asset_class,
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
        cost=pol.commission_bps / 1e4 + half_spread_bps / 1e4,
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
