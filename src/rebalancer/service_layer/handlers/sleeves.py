"""Sleeves of a stored account: their attribution of the pooled holdings, drift per sleeve and
for the account, and the sleeve netting optimizer (unified or strategy-level, chosen per call)
on the stored lots, cash and models.

Lots are held by the account, not by a sleeve. A per-sleeve attribution (shares of each
instrument and cash per sleeve) may be stored with ``PUT /v1/accounts/{id}/sleeves/holdings``
(tables of migration 0003); it is used while it adds up to the account's lots and cash. Without
one (or once trades made it stale) each instrument's pooled quantity and the cash are
attributed pro rata to what each sleeve should hold, ``share * model weight`` (by ``share``
where no sleeve targets it), the rule of the monitoring drift
(``monitoring._common.sleeve_holdings``).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from rebalancer.adapters.repositories.sleeves import SleeveAttributionRepository
from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.model import CASH, Account, ModelPortfolio
from rebalancer.optimizer.household.sleeves import (
    SleeveIn,
    SleeveMode,
    SleeveRequest,
    SleeveResponse,
    analyze_sleeves,
    check_sleeves,
    sleeve_drifts,
)
from rebalancer.service_layer.handlers.monitoring.drift import compute_drift
from rebalancer.service_layer.handlers.recommending import build_request
from rebalancer.service_layer.unit_of_work import UnitOfWork

PRO_RATA = "pro_rata_to_targets"
STORED = "stored"
STALE = "pro_rata_to_targets (the stored attribution no longer adds up to the lots and cash)"
"""Where the sleeves' holdings came from (the ``attribution`` of the answers)."""


def _with_sleeves(uow: UnitOfWork, account_id: str) -> tuple[Account, dict[str, ModelPortfolio]]:
    account = uow.accounts.get(account_id)
    if not account.sleeves:
        raise InvalidInput(
            f"account {account_id} has no sleeves; give it sleeves with PUT /v1/accounts/{{id}}",
            ["account_id"],
        )
    models = {
        k: r.model for k, r in uow.models.get_many(s.model_id for s in account.sleeves).items()
    }
    return account, models


def _split(account: Account, models: dict[str, ModelPortfolio], key: str) -> dict[str, float]:
    """Sleeve id -> fraction of the pooled ``key`` (instrument or CASH) it is attributed."""
    wants = {s.id: s.share * models[s.model_id].weights().get(key, 0.0) for s in account.sleeves}
    total = sum(wants.values())
    if total > 0:
        return {k: v / total for k, v in wants.items()}
    shares = sum(s.share for s in account.sleeves)
    return {s.id: s.share / shares for s in account.sleeves}


def _request(
    uow: UnitOfWork,
    account: Account,
    models: dict[str, ModelPortfolio],
    mode: SleeveMode = SleeveMode.UNIFIED,
    sleeve_id: str | None = None,
    given: tuple[dict[str, dict[str, float]], dict[str, float]] | None = None,
) -> tuple[SleeveRequest, str]:
    """The sleeve optimizer's request for a stored account and where its attribution came
    from: ``given``, else the stored one while it adds up, else pro rata."""
    as_of = uow.market.as_of() or date.today()
    req = build_request(uow, account, as_of)

    def make(holdings: dict[str, dict[str, float]], cash: dict[str, float]) -> SleeveRequest:
        return SleeveRequest(
            account=req,
            sleeves=[
                SleeveIn(
                    id=s.id,
                    share=s.share,
                    targets=models[s.model_id].weights(),
                    holdings=holdings.get(s.id, {}),
                    cash=cash.get(s.id, 0.0),
                )
                for s in account.sleeves
            ],
            mode=mode,
            sleeve_id=sleeve_id,
        )

    if given is not None:
        out = make(*given)
        check_sleeves(out)
        return out, STORED
    label = PRO_RATA
    stored = SleeveAttributionRepository(uow.conn, uow.tenant_id).get(account.id)
    if stored is not None:
        out = make(stored.holdings, stored.cash)
        try:
            check_sleeves(out)
            return out, STORED
        except InvalidInput:
            label = STALE
    pooled: dict[str, float] = {}
    for lot in req.portfolio.lots:
        pooled[lot.instrument] = pooled.get(lot.instrument, 0.0) + lot.quantity
    holdings: dict[str, dict[str, float]] = {s.id: {} for s in account.sleeves}
    for inst, qty in pooled.items():
        for sid, frac in _split(account, models, inst).items():
            if frac > 0:
                holdings[sid][inst] = qty * frac
    cash = {k: req.portfolio.cash * v for k, v in _split(account, models, CASH).items()}
    return make(holdings, cash), label


def sleeve_drift(uow: UnitOfWork, account_id: str) -> dict[str, Any]:
    """Drift of each sleeve (its holdings and cash against ``share * model``: half the sum of
    absolute differences, fractions of the account NAV; and its value share against its target
    share) and of the account (against the blended target).

    Raises
    ------
    InvalidInput
        The account has no sleeves, or a price is missing.
    """
    account, models = _with_sleeves(uow, account_id)
    report, nav = compute_drift(uow, account, with_risk=False)
    req, label = _request(uow, account, models)
    drifts = sleeve_drifts(req)
    price = {i.id: i.price for i in req.account.instruments}
    out = []
    for s in req.sleeves:
        value = sum(q * price[i] for i, q in s.holdings.items()) + s.cash
        out.append(
            {
                "id": s.id,
                "share": s.share,
                "value": value,
                "share_drift": value / nav - s.share if nav > 0 else 0.0,
                "drift": drifts[s.id],
                "holdings": dict(s.holdings),
                "cash": s.cash,
            }
        )
    return {
        "account_id": account.id,
        "as_of": report.as_of.isoformat() if report.as_of is not None else None,
        "nav": nav,
        "attribution": label,
        "account": report.account.to_dict(),
        "sleeves": out,
    }


def put_sleeve_holdings(
    uow: UnitOfWork,
    account_id: str,
    holdings: dict[str, dict[str, float]],
    cash: dict[str, float],
) -> dict[str, Any]:
    """Store the account's per-sleeve attribution (no commit).

    Raises
    ------
    InvalidInput
        A sleeve is not the account's, or holdings and cash do not add up to its lots and cash
        (``fields`` name them).
    """
    account, models = _with_sleeves(uow, account_id)
    own = {s.id for s in account.sleeves}
    for sid in [*holdings, *cash]:
        if sid not in own:
            raise InvalidInput(f"sleeve {sid} is not a sleeve of {account_id}", ["sleeves"])
    _request(uow, account, models, given=(holdings, cash))
    SleeveAttributionRepository(uow.conn, uow.tenant_id).replace(account_id, holdings, cash)
    return sleeve_drift(uow, account_id)


def analyze_stored_sleeves(
    uow: UnitOfWork, account_id: str, mode: SleeveMode, sleeve_id: str | None
) -> SleeveResponse:
    """Run the sleeve optimizer on a stored account (nothing is stored)."""
    account, models = _with_sleeves(uow, account_id)
    req, label = _request(uow, account, models, mode, sleeve_id)
    return analyze_sleeves(req).model_copy(update={"attribution": label})
