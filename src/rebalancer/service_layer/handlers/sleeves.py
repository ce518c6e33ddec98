"""Sleeves of a stored account: drift per sleeve and for the account, and the sleeve netting
optimizer (unified or strategy-level, chosen per call) on the stored lots, cash and models.

Lots are held by the account, not by a sleeve, and no per-sleeve attribution is stored: each
instrument's pooled quantity (and the cash) is attributed to the sleeves pro rata to what each
should hold, ``share * model weight`` (by ``share`` alone where no sleeve targets it), the
same rule as the monitoring drift (``monitoring._common.sleeve_holdings``).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.model import CASH, Account, ModelPortfolio
from rebalancer.optimizer.household.sleeves import (
    SleeveMode,
    SleeveRequest,
    SleeveResponse,
    analyze_sleeves,
)
from rebalancer.service_layer.handlers.monitoring.drift import compute_drift
from rebalancer.service_layer.handlers.recommending import build_request
from rebalancer.service_layer.unit_of_work import UnitOfWork

ATTRIBUTION = "pro_rata_to_targets"
"""How pooled holdings are split among sleeves (no per-sleeve attribution is stored)."""


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


def sleeve_drift(uow: UnitOfWork, account_id: str) -> dict[str, Any]:
    """Drift of each sleeve (its holdings against ``share * model``, and its share of NAV
    against its target share) and of the account (against the blended target).

    Raises
    ------
    InvalidInput
        The account has no sleeves, or a price is missing.
    """
    account, _ = _with_sleeves(uow, account_id)
    report, nav = compute_drift(uow, account, with_risk=False)
    share_level = report.levels.get("sleeve", {})
    return {
        "account_id": account.id,
        "as_of": report.as_of.isoformat() if report.as_of is not None else None,
        "nav": nav,
        "attribution": ATTRIBUTION,
        "account": report.account.to_dict(),
        "sleeves": [
            {
                "id": s.id,
                "model_id": s.model_id,
                "share": s.share,
                "share_drift": share_level[s.id].to_dict() if s.id in share_level else None,
                "drift": report.sleeve_internal[s.id].to_dict()
                if s.id in report.sleeve_internal
                else None,
            }
            for s in account.sleeves
        ],
    }


def stored_sleeve_request(
    uow: UnitOfWork, account_id: str, mode: SleeveMode, sleeve_id: str | None
) -> SleeveRequest:
    """The sleeve optimizer's request for a stored account (pooled holdings attributed pro
    rata to what each sleeve should hold)."""
    account, models = _with_sleeves(uow, account_id)
    as_of = uow.market.as_of() or date.today()
    req = build_request(uow, account, as_of)
    pooled: dict[str, float] = {}
    for lot in req.portfolio.lots:
        pooled[lot.instrument] = pooled.get(lot.instrument, 0.0) + lot.quantity
    holdings: dict[str, dict[str, float]] = {s.id: {} for s in account.sleeves}
    for inst, qty in pooled.items():
        for sid, frac in _split(account, models, inst).items():
            if frac > 0:
                holdings[sid][inst] = qty * frac
    cash = _split(account, models, CASH)
    return SleeveRequest(
        account=req,
        sleeves=[
            {  # type: ignore[list-item]  # validated by pydantic
                "id": s.id,
                "share": s.share,
                "targets": models[s.model_id].weights(),
                "holdings": holdings[s.id],
                "cash": req.portfolio.cash * cash[s.id],
            }
            for s in account.sleeves
        ],
        mode=mode,
        sleeve_id=sleeve_id,
    )


def analyze_stored_sleeves(
    uow: UnitOfWork, account_id: str, mode: SleeveMode, sleeve_id: str | None
) -> SleeveResponse:
    """Run the sleeve optimizer on a stored account (nothing is stored)."""
    return analyze_sleeves(stored_sleeve_request(uow, account_id, mode, sleeve_id))
