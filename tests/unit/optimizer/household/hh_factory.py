"""Builders of small household requests for the household optimizer tests."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import numpy as np

from rebalancer.optimizer.household.schemas import HouseholdRequest

AS_OF = date(2024, 6, 28)


def day(days_ago: int) -> str:
    return (AS_OF - timedelta(days=days_ago)).isoformat()


def lot(lot_id: str, inst: str, qty: float, basis: float, days_ago: int = 400) -> dict[str, Any]:
    return {
        "lot_id": lot_id,
        "instrument": inst,
        "quantity": qty,
        "cost_basis": basis,
        "acquired": day(days_ago),
    }


def inst(iid: str, price: float = 100.0, **kw: Any) -> dict[str, Any]:
    return {
        "id": iid,
        "price": price,
        "adv_shares": 1e7,
        "daily_volatility": 0.02,
        "half_spread_bps": 5.0,
        "sector": "s",
        "asset_class": "equity",
        **kw,
    }


def diag_cov(ids: list[str], var: float = 0.04) -> dict[str, Any]:
    return {"instruments": ids, "covariance": (np.eye(len(ids)) * var).tolist()}


def account(
    aid: str,
    tax_type: str,
    *,
    cash: float,
    lots: list[dict[str, Any]],
    targets: dict[str, float],
    instruments: list[dict[str, Any]],
    policy: dict[str, Any] | None = None,
    recent_buys: list[dict[str, Any]] | None = None,
    risk_model: dict[str, Any] | None = None,
) -> dict[str, Any]:
    ids = [i["id"] for i in instruments]
    return {
        "id": aid,
        "tax_type": tax_type,
        "request": {
            "as_of": AS_OF.isoformat(),
            "portfolio": {"cash": cash, "lots": lots},
            "recent_buys": recent_buys or [],
            "targets": targets,
            "instruments": instruments,
            "risk_model": risk_model or diag_cov(ids),
            "policy": policy or {},
        },
    }


def household(accounts: list[dict[str, Any]], **kw: Any) -> HouseholdRequest:
    return HouseholdRequest.model_validate({"as_of": AS_OF.isoformat(), "accounts": accounts, **kw})


def random_household(seed: int, n_accounts: int = 3, n: int = 5, targets: bool = False) -> Any:
    """Random small household, gains only (so accounts solved alone never wash each other)."""
    rng = np.random.default_rng(seed)
    ids = [f"I{j}" for j in range(n)]
    prices = rng.uniform(20, 200, n)
    classes = ["fixed_income" if j % 2 else "equity" for j in range(n)]
    insts = [
        inst(
            ids[j],
            float(prices[j]),
            adv_shares=float(rng.uniform(1e4, 1e6)),
            half_spread_bps=float(rng.uniform(1, 10)),
            asset_class=classes[j],
        )
        for j in range(n)
    ]
    b = rng.normal(0, 0.1, (n, 2))
    rm = {
        "instruments": ids,
        "factor_exposures": b.tolist(),
        "factor_covariance": [[0.04, 0.0], [0.0, 0.02]],
        "specific_variance": rng.uniform(0.01, 0.05, n).tolist(),
    }
    accts = []
    for a in range(n_accounts):
        w = rng.dirichlet(np.ones(n)) * 0.9
        nav = float(rng.uniform(5e4, 5e5))
        lots = [
            lot(
                f"a{a}l{j}",
                ids[j],
                float(max(1, np.floor(w[j] * nav / prices[j]))),
                float(prices[j] * rng.uniform(0.5, 0.99)),
                int(rng.integers(40, 900)),
            )
            for j in range(n)
        ]
        t = rng.dirichlet(np.ones(n)) * 0.95
        tgt = {ids[j]: float(t[j]) for j in range(n)}
        tgt["CASH"] = 1.0 - sum(tgt.values())
        accts.append(
            account(
                f"A{a}",
                ["taxable", "tax_deferred", "tax_exempt"][a % 3],
                cash=nav * 0.1,
                lots=lots,
                targets=tgt,
                instruments=insts,
                risk_model=rm,
                policy={"risk_aversion": 20.0, "max_turnover": 0.6},
            )
        )
    kw: dict[str, Any] = {}
    if targets:
        t = rng.dirichlet(np.ones(n)) * 0.97
        kw["targets"] = {**{ids[j]: float(t[j]) for j in range(n)}, "CASH": 1 - float(t.sum())}
        kw["risk_model"] = rm
        kw["policy"] = {"risk_aversion": 20.0, "account_tracking_weight": 0.5}
    return household(accts, **kw)
