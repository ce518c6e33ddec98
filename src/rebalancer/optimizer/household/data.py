"""NumPy view of a household request: one :class:`ProblemData` per account plus the household
arrays (union of instruments, household targets and risk, tax drag, transfer links).

Household amounts are fractions of the household NAV ``H``; an account's own arrays stay in
fractions of its NAV, and ``share = NAV_a / H`` converts between the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rebalancer.domain.errors import InvalidInput, RebalancerError
from rebalancer.domain.model import CASH, TaxType, validate_targets
from rebalancer.optimizer.data import BIG, ProblemData, _risk_factor, build_data
from rebalancer.optimizer.household.schemas import HouseholdRequest
from rebalancer.optimizer.schemas import AnalyzeRequest, CovarianceRiskModel, FactorRiskModel
from rebalancer.optimizer.validation import _check_risk_model, check_request

Arr = NDArray[np.float64]
_PRICE_RTOL = 1e-9


@dataclass(slots=True)
class AccountPart:
    """One account inside the household problem."""

    id: str
    tax_type: TaxType
    request: AnalyzeRequest
    """The account request as solved (tax rates 0 unless taxable)."""
    data: ProblemData
    share: float
    """NAV_a / H."""
    idx: NDArray[np.int64]
    """Position of each of the account's instruments in the household universe."""
    drag: Arr
    """Annual tax drag per instrument (fraction of value), 0 outside taxable accounts."""

    @property
    def taxable(self) -> bool:
        return self.tax_type is TaxType.TAXABLE


@dataclass(slots=True)
class HouseholdData:
    """Arrays of one household request."""

    accounts: list[AccountPart]
    ids: list[str]
    asset_class: list[str]
    groups: list[str]
    nav: float
    target: Arr | None
    load: Arr
    spec: Arr
    gamma: float
    account_weight: float
    horizon: float
    links: list[tuple[int, int]]
    link_cap: Arr
    transfer_cost: float
    min_net_benefit: float
    te_limit: float | None = None
    """Household tracking error limit (return units); None: no limit."""
    blocked_buys: list[str] = field(default_factory=list)
    blocked_lots: list[str] = field(default_factory=list)

    def x_before(self) -> Arr:
        """Household weights per instrument before trading (fractions of H)."""
        x = np.zeros(len(self.ids))
        for a in self.accounts:
            np.add.at(x, a.idx, a.share * a.data.w)
        return x


def _risk_stub(rm: CovarianceRiskModel | FactorRiskModel) -> AnalyzeRequest:
    """An unvalidated request holding only ``rm`` (the single-account risk helpers read just
    ``risk_model``)."""
    fields: dict[str, Any] = {"risk_model": rm}
    return AnalyzeRequest.model_construct(**fields)


def _prefixed(exc: RebalancerError, prefix: str) -> InvalidInput:
    return InvalidInput(exc.detail, [f"{prefix}.{f}" for f in exc.fields] or [prefix])


def _unsupported(n: int, req: AnalyzeRequest) -> None:
    """Refuse the account policy fields the household problem does not model yet."""
    if req.policy.max_sector_risk_share:
        raise InvalidInput(
            "max_sector_risk_share is not supported in a household rebalance (tracking error, "
            "VaR and stress max_loss are); drop it or rebalance the account alone with "
            "POST /v1/analyze",
            [f"accounts[{n}].request.policy.max_sector_risk_share"],
        )


def check_household(req: HouseholdRequest) -> None:
    """Cross-field rules of a household request (each account's own rules included).

    Raises
    ------
    InvalidInput
        ``fields`` name the offending household fields, e.g. ``accounts[1].request.targets``.
    """
    ids = [a.id for a in req.accounts]
    if len(set(ids)) != len(ids):
        raise InvalidInput(f"account ids repeat: {ids}", ["accounts"])
    price: dict[str, tuple[float, int]] = {}
    for n, acct in enumerate(req.accounts):
        prefix = f"accounts[{n}].request"
        try:
            check_request(acct.request)
        except InvalidInput as exc:
            raise _prefixed(exc, prefix) from None
        if acct.request.as_of != req.as_of:
            raise InvalidInput(
                f"account {acct.id} is as of {acct.request.as_of}, the household {req.as_of}",
                [f"{prefix}.as_of"],
            )
        _unsupported(n, acct.request)
        for inst in acct.request.instruments:
            seen = price.setdefault(inst.id, (inst.price, n))
            if not math.isclose(seen[0], inst.price, rel_tol=_PRICE_RTOL):
                raise InvalidInput(
                    f"{inst.id} is priced {seen[0]} in accounts[{seen[1]}] and {inst.price} in "
                    f"accounts[{n}]; one household needs one price",
                    [f"{prefix}.instruments"],
                )
    known = set(ids)
    for n, link in enumerate(req.links):
        for side in ("from_account", "to_account"):
            if getattr(link, side) not in known:
                raise InvalidInput(
                    f"link names unknown account {getattr(link, side)}", [f"links[{n}].{side}"]
                )
        if link.from_account == link.to_account:
            raise InvalidInput("a link joins two different accounts", [f"links[{n}]"])
    for n, sale in enumerate(req.recent_loss_sales):
        if sale.account_id not in known:
            raise InvalidInput(
                f"loss sale in unknown account {sale.account_id}",
                [f"recent_loss_sales[{n}].account_id"],
            )
    if req.targets is None:
        if req.policy.max_tracking_error is not None:
            raise InvalidInput(
                "a household tracking error limit needs household targets",
                ["policy.max_tracking_error"],
            )
        return
    validate_targets(req.targets, "targets")
    for key in req.targets:
        if key != CASH and key not in price:
            raise InvalidInput(
                f"household target {key} is in no account's instruments", [f"targets.{key}"]
            )
    if req.risk_model is None:
        raise InvalidInput("household targets need a household risk_model", ["risk_model"])
    stub = _risk_stub(req.risk_model)
    try:
        _check_risk_model(stub, sorted(price))
    except InvalidInput as exc:
        raise InvalidInput(exc.detail, list(exc.fields)) from None


def _solved_request(acct_req: AnalyzeRequest, tax_type: TaxType) -> AnalyzeRequest:
    if tax_type is TaxType.TAXABLE:
        return acct_req
    pol = acct_req.policy.model_copy(update={"short_term_rate": 0.0, "long_term_rate": 0.0})
    return acct_req.model_copy(update={"policy": pol})


def _release_wash_blocks(data: ProblemData, req: AnalyzeRequest) -> None:
    """Outside a taxable account a sale realizes no loss, so no lot is wash-blocked."""
    no_sell = set(req.policy.no_sell)
    adv = {i.id: i.adv_shares for i in req.instruments}
    blocked = set(data.lot_blocked_wash)
    for i, row in enumerate(data.lot_ids):
        for j, lot_id in enumerate(row):
            if lot_id in blocked and data.ids[i] not in no_sell and adv[data.ids[i]] > 0:
                data.lot_ub[i, j] = data.lot_w[i, j]
    data.lot_blocked_wash = []
    data.recent_groups = set()


def build_household(req: HouseholdRequest) -> HouseholdData:
    """Arrays of a checked household request (see :func:`check_household`)."""
    pol = req.policy
    parts: list[tuple[str, TaxType, AnalyzeRequest, ProblemData]] = []
    for acct in req.accounts:
        sreq = _solved_request(acct.request, acct.tax_type)
        parts.append((acct.id, acct.tax_type, sreq, build_data(sreq)))
    info = {i.id: i for _, _, r, _ in parts for i in r.instruments}
    ids = sorted(info)
    pos = {i: n for n, i in enumerate(ids)}
    groups = [info[i].wash_sale_group or i for i in ids]
    group_of = dict(zip(ids, groups, strict=True))
    nav = sum(d.nav for *_, d in parts)
    drag_of = {
        i: req.tax_drag.get(i, pol.asset_class_tax_drag.get(info[i].asset_class, 0.0)) for i in ids
    }
    # wash sale across the household: recent buys anywhere block loss sales in taxable accounts
    recent = set().union(*(d.recent_groups for *_, d in parts))
    since = req.as_of - timedelta(days=pol.wash_sale_days)
    taxable_ids = {a.id for a in req.accounts if a.tax_type is TaxType.TAXABLE}
    sold = {
        group_of.get(s.instrument, s.instrument)
        for s in req.recent_loss_sales
        if s.account_id in taxable_ids and since <= s.date <= req.as_of
    }
    target = None
    if req.targets is not None:
        target = np.array([req.targets.get(i, 0.0) for i in ids])
    hh = HouseholdData(
        accounts=[],
        ids=ids,
        asset_class=[info[i].asset_class for i in ids],
        groups=groups,
        nav=nav,
        target=target,
        load=np.zeros((len(ids), 1)),
        spec=np.zeros(len(ids)),
        gamma=pol.risk_aversion if target is not None else 0.0,
        account_weight=(
            pol.account_tracking_weight
            if pol.account_tracking_weight is not None
            else (0.0 if target is not None else 1.0)
        ),
        horizon=pol.location_horizon_years,
        links=[(index_of(req, lk.from_account), index_of(req, lk.to_account)) for lk in req.links],
        link_cap=np.array(
            [BIG if lk.max_amount is None else lk.max_amount / nav for lk in req.links]
        ),
        transfer_cost=pol.transfer_cost_bps / 1e4,
        min_net_benefit=pol.min_net_benefit,
        te_limit=pol.max_tracking_error if target is not None else None,
    )
    if target is not None and req.risk_model is not None:
        stub = _risk_stub(req.risk_model)
        hh.load, hh.spec = _risk_factor(stub, ids)
    for aid, tax_type, sreq, data in parts:
        idx = np.array([pos[i] for i in data.ids], dtype=np.int64)
        taxable = tax_type is TaxType.TAXABLE
        if taxable:
            loss = data.lot_loss  # is_wash_sale_loss: net of selling costs
            hit = np.array([g in recent for g in data.groups])[:, None] & loss
            hit &= data.lot_ub > 0
            for i, j in zip(*np.nonzero(hit), strict=True):
                data.lot_blocked_wash.append(str(data.lot_ids[i][j]))
            data.lot_ub[hit] = 0.0
            data.recent_groups |= recent
        else:
            _release_wash_blocks(data, sreq)
        if target is not None:
            no_buy = set(sreq.policy.no_buy)
            adv = np.array([i.adv_shares for i in sreq.instruments])
            cash_only = sreq.policy.raise_cash > 0 and not sreq.policy.raise_cash_allow_buys
            ok = (target[idx] > 0) & (adv > 0) & ~np.array([i in no_buy for i in data.ids])
            if not cash_only:
                data.buy_ub = np.where(ok, BIG, data.buy_ub)
        for n, g in enumerate(data.groups):
            if g in sold and data.buy_ub[n] > 0:
                data.buy_ub[n] = 0.0
                hh.blocked_buys.append(f"{aid}:{data.ids[n]}")
        hh.blocked_lots += [f"{aid}:{lot}" for lot in data.lot_blocked_wash]
        drag = np.array([drag_of[i] for i in data.ids]) if taxable else np.zeros(data.n)
        hh.accounts.append(AccountPart(aid, tax_type, sreq, data, data.nav / nav, idx, drag))
    return hh


def index_of(req: HouseholdRequest, account_id: str) -> int:
    """Position of ``account_id`` in ``req.accounts``."""
    return next(n for n, a in enumerate(req.accounts) if a.id == account_id)
