"""Builders of small analyze requests for the optimizer tests."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import numpy as np

from rebalancer.optimizer.schemas import AnalyzeRequest

AS_OF = date(2024, 6, 28)


def lot(lot_id: str, inst: str, qty: float, basis: float, days_ago: int = 400) -> dict[str, Any]:
    return {
        "lot_id": lot_id,
        "instrument": inst,
        "quantity": qty,
        "cost_basis": basis,
        "acquired": (AS_OF - timedelta(days=days_ago)).isoformat(),
    }


def inst(iid: str, price: float = 100.0, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": iid,
        "price": price,
        "adv_shares": 1e7,
        "daily_volatility": 0.02,
        "half_spread_bps": 5.0,
        "sector": "tech",
        "asset_class": "equity",
        "lot_size": 1,
    }
    base.update(kw)
    return base


def diag_cov(ids: list[str], var: float = 0.04) -> dict[str, Any]:
    n = len(ids)
    return {"instruments": ids, "covariance": (np.eye(n) * var).tolist()}


def request(
    *,
    cash: float,
    lots: list[dict[str, Any]],
    targets: dict[str, float],
    instruments: list[dict[str, Any]],
    risk_model: dict[str, Any] | None = None,
    policy: dict[str, Any] | None = None,
    recent_buys: list[dict[str, Any]] | None = None,
) -> AnalyzeRequest:
    ids = [i["id"] for i in instruments]
    return AnalyzeRequest.model_validate(
        {
            "as_of": AS_OF.isoformat(),
            "portfolio": {"cash": cash, "lots": lots},
            "recent_buys": recent_buys or [],
            "targets": targets,
            "instruments": instruments,
            "risk_model": risk_model or diag_cov(ids),
            "policy": policy or {},
        }
    )


def random_request(
    seed: int, n: int = 6, lots_per: int = 2, k: int = 2, gains_only: bool = False, **policy: Any
) -> AnalyzeRequest:
    """A random small problem with a factor risk model."""
    rng = np.random.default_rng(seed)
    ids = [f"I{j}" for j in range(n)]
    prices = rng.uniform(20, 200, n)
    insts = [
        inst(
            ids[j],
            float(prices[j]),
            adv_shares=float(rng.uniform(1e4, 1e6)),
            half_spread_bps=float(rng.uniform(1, 20)),
            daily_volatility=float(rng.uniform(0.01, 0.03)),
            sector=["tech", "energy", "health"][j % 3],
        )
        for j in range(n)
    ]
    lots = []
    for j in range(n):
        for m in range(lots_per):
            ratio = rng.uniform(0.5, 1.0) if gains_only else rng.uniform(0.6, 1.4)
            lots.append(
                lot(
                    f"L{j}_{m}",
                    ids[j],
                    float(rng.integers(10, 200)),
                    float(prices[j] * ratio),
                    int(rng.integers(40, 900)),
                )
            )
    w = rng.dirichlet(np.ones(n + 1))
    targets = {ids[j]: float(w[j]) for j in range(n)}
    targets["CASH"] = float(1.0 - sum(targets.values()))
    b = rng.normal(0, 0.15, (n, k))
    rm = {
        "instruments": ids,
        "factor_exposures": b.tolist(),
        "factor_covariance": (np.eye(k) * 0.04).tolist(),
        "specific_variance": rng.uniform(0.005, 0.05, n).tolist(),
    }
    return request(
        cash=float(rng.uniform(1000, 20000)),
        lots=lots,
        targets=targets,
        instruments=insts,
        risk_model=rm,
        policy=policy,
    )
