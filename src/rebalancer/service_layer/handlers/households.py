"""Households: settings (targets, links), the household drift view and the household
rebalance (one problem over every account, one stored recommendation per account, so the
usual approval creates each account's orders)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from rebalancer.adapters.repositories.households import HouseholdRecord, HouseholdRepository
from rebalancer.analytics.risk_model import estimate_covariance
from rebalancer.contracts import (
    StatusEntity,
)
from rebalancer.domain.errors import Conflict, InvalidInput
from rebalancer.domain.model import CASH, Account, TaxType, validate_targets
from rebalancer.optimizer.household import HouseholdRecommender, HouseholdRequest
from rebalancer.optimizer.household.schemas import (
    HouseholdAccount,
    HouseholdPolicy,
    HouseholdResponse,
    RecentLossSale,
    TransferLink,
)
from rebalancer.optimizer.schemas import AnalyzeRequest, CovarianceRiskModel
from rebalancer.service_layer.handlers.monitoring.drift import compute_drift
from rebalancer.service_layer.handlers.recommending import (
    DEFAULT_RISK_AVERSION,
    _status_event,
    build_request,
    recommendation_created,
)
from rebalancer.service_layer.unit_of_work import UnitOfWork

_LOCAL = threading.local()


def household_optimizer() -> HouseholdRecommender:
    """This thread's household recommender (compiled problems are not shared by threads)."""
    rec: HouseholdRecommender | None = getattr(_LOCAL, "rec", None)
    if rec is None:
        rec = _LOCAL.rec = HouseholdRecommender()
    return rec


def _repo(uow: UnitOfWork) -> HouseholdRepository:
    return HouseholdRepository(uow.conn, uow.tenant_id)


def _members(uow: UnitOfWork, household_id: str, *, lock: bool = False) -> list[Account]:
    ids = _repo(uow).account_ids(household_id)
    if not ids:
        raise InvalidInput(f"household {household_id} has no accounts", ["household_id"])
    if lock:
        return [uow.accounts.get(i, lock=True) for i in ids]
    return uow.accounts.get_many(ids)


def household_view(rec: HouseholdRecord, account_ids: Sequence[str]) -> dict[str, Any]:
    return {
        "id": rec.id,
        "name": rec.name,
        "targets": rec.targets,
        "links": rec.links,
        "account_ids": list(account_ids),
    }


def put_household(
    uow: UnitOfWork,
    household_id: str,
    name: str,
    targets: Mapping[str, float] | None,
    links: Sequence[TransferLink],
) -> dict[str, Any]:
    """Create or replace a household's targets and transfer links (no commit).

    Raises
    ------
    InvalidInput
        Targets not summing to 1, or a link naming an account outside the household.
    """
    if targets is not None:
        validate_targets(targets, "targets")
    repo = _repo(uow)
    members = set(repo.account_ids(household_id))
    for n, link in enumerate(links):
        for side in ("from_account", "to_account"):
            if getattr(link, side) not in members:
                raise InvalidInput(
                    f"account {getattr(link, side)} is not in household {household_id}; set "
                    "its household_id first",
                    [f"links[{n}].{side}"],
                )
    rec = repo.upsert(household_id, name, targets, [lk.model_dump() for lk in links])
    return household_view(rec, sorted(members))


def household_drift(uow: UnitOfWork, household_id: str) -> dict[str, Any]:
    """Household drift: each account's drift, the household weights against the household
    targets (or the NAV-weighted blend of the accounts' targets) and asset location."""
    rec = _repo(uow).get(household_id)
    accounts = _members(uow, household_id)
    values: dict[str, float] = {}
    blend: dict[str, float] = {}
    location: dict[str, dict[str, float]] = {}
    rows = []
    total = 0.0
    for acct in accounts:
        report, nav = compute_drift(uow, acct, with_risk=False)
        total += nav
        inst = report.levels["instrument"]
        for key, d in inst.items():
            values[key] = values.get(key, 0.0) + d.weight * nav
            blend[key] = blend.get(key, 0.0) + d.target * nav
        for ac, d in report.levels["asset_class"].items():
            row = location.setdefault(ac, {})
            row[str(acct.tax_type)] = row.get(str(acct.tax_type), 0.0) + d.weight * nav
        rows.append(
            {
                "account_id": acct.id,
                "tax_type": str(acct.tax_type),
                "nav": nav,
                "drift": report.account.turnover,
                "max_abs": report.account.max_abs,
            }
        )
    weights = {k: v / total for k, v in values.items()} if total > 0 else {}
    targets = rec.targets or ({k: v / total for k, v in blend.items()} if total > 0 else {})
    keys = sorted(set(weights) | set(targets))
    drift = {k: weights.get(k, 0.0) - targets.get(k, 0.0) for k in keys}
    return {
        "household_id": household_id,
        "nav": total,
        "targets_source": "household" if rec.targets else "accounts",
        "drift": 0.5 * sum(abs(v) for v in drift.values()),
        "by_instrument": drift,
        "weights": weights,
        "targets": targets,
        "location": location,
        "accounts": rows,
    }


def build_household_request(uow: UnitOfWork, household_id: str, as_of: date) -> HouseholdRequest:
    """The household request from stored accounts, models, market data, tax history and the
    household's targets and links. With household targets every account sees the union of
    instruments (so location can move an asset to any account) and one household covariance.

    Raises
    ------
    InvalidInput
        A household target names an instrument no account holds or targets, or a price is
        missing.
    """
    rec = _repo(uow).get(household_id)
    accounts = _members(uow, household_id, lock=True)
    reqs = {a.id: build_request(uow, a, as_of) for a in accounts}
    window = reqs[accounts[0].id].policy.wash_sale_days
    losses = [
        RecentLossSale(account_id=a.id, instrument=i, date=d)
        for a in accounts
        if a.tax_type is TaxType.TAXABLE
        for i, d in uow.tax.recent_loss_sales(a.id, as_of, window)
    ]
    risk_model = None
    if rec.targets is not None:
        union = {i.id: i for r in reqs.values() for i in r.instruments}
        for key in rec.targets:
            if key != CASH and key not in union:
                raise InvalidInput(
                    f"household target {key} is neither held nor in a model of the household's "
                    "accounts",
                    [f"targets.{key}"],
                )
        ids = sorted(union)
        quotes = uow.market.latest(ids)
        cov = estimate_covariance(
            ids, uow.market.closes(ids), {i: quotes[i].daily_volatility for i in ids}
        )
        risk_model = CovarianceRiskModel(instruments=ids, covariance=cov.tolist())
        reqs = {k: _widen(r, [union[i] for i in ids], risk_model) for k, r in reqs.items()}
    return HouseholdRequest(
        as_of=as_of,
        accounts=[
            HouseholdAccount(id=a.id, tax_type=a.tax_type, request=reqs[a.id]) for a in accounts
        ],
        targets=rec.targets,
        risk_model=risk_model,
        links=[TransferLink.model_validate(lk) for lk in rec.links],
        recent_loss_sales=losses,
        policy=HouseholdPolicy(risk_aversion=DEFAULT_RISK_AVERSION),
    )


def _widen(req: AnalyzeRequest, instruments: list[Any], rm: CovarianceRiskModel) -> AnalyzeRequest:
    return req.model_copy(update={"instruments": instruments, "risk_model": rm})


def rebalance_household(
    uow: UnitOfWork, household_id: str, actor: str, optimizer: HouseholdRecommender | None = None
) -> dict[str, Any]:
    """Solve the household and store one rebalance and recommendation per account (no commit).

    Raises
    ------
    Conflict
        An account of the household has a rebalance in flight.
    InvalidInput, InfeasibleRebalance, ValidationFailed
        From the request or the optimizer (nothing is stored).
    """
    as_of = uow.market.as_of() or date.today()
    request = build_household_request(uow, household_id, as_of)
    for n, acct in enumerate(request.accounts):
        if uow.rebalancing.open_rebalance(acct.id) is not None:
            raise Conflict(
                f"account {acct.id} has a rebalance in flight; finish or cancel it first",
                [f"accounts[{n}]"],
            )
    response = (optimizer or household_optimizer()).analyze(request)
    out = []
    for acct, ans in zip(request.accounts, response.accounts, strict=True):
        out.append(_store(uow, acct, ans.analysis, response, household_id, actor))
    return _summary(household_id, response, out)


def _store(
    uow: UnitOfWork,
    acct: HouseholdAccount,
    analysis: Any,
    response: HouseholdResponse,
    household_id: str,
    actor: str,
) -> dict[str, Any]:
    decision = str(analysis.decision)
    status = "pending_approval" if decision == "rebalance" else "no_trade"
    rid = uow.rebalancing.create_rebalance(acct.id, status, [f"household:{household_id}"], 50)
    rec_id = uow.rebalancing.add_recommendation(
        rid,
        acct.id,
        decision,
        status,
        Decimal(str(round(analysis.net_benefit, 6))),
        acct.request.model_dump(mode="json"),
        analysis.model_dump(mode="json"),
    )
    uow.publish(
        recommendation_created(uow.tenant_id, rec_id, acct.id, rid, decision, analysis),
        _status_event(uow, StatusEntity.REBALANCE, str(rid), acct.id, status, None),
    )
    uow.audit.record(actor, "household_rebalance", "account", acct.id, {"rebalance_id": rid})
    return {
        "account_id": acct.id,
        "tax_type": str(acct.tax_type),
        "rebalance_id": str(rid),
        "recommendation_id": str(rec_id),
        "decision": decision,
        "trades": len(analysis.trades),
        "net_benefit": analysis.net_benefit,
    }


def _summary(
    household_id: str, response: HouseholdResponse, accounts: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "household_id": household_id,
        "decision": str(response.decision),
        "net_benefit": response.net_benefit,
        "accounts": accounts,
        "transfers": [t.model_dump() for t in response.transfers],
        "objective": response.objective.model_dump(),
        "location_after": response.location_after,
        "wash_sale": response.wash_sale.model_dump(),
        "messages": response.messages,
    }
