"""Seeded random rebalance problems that exercise every limit of the fast path."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import numpy as np

from rebalancer.optimizer.schemas import AnalyzeRequest

AS_OF = date(2024, 6, 28)


def hard_request(seed: int, n: int, lots_per: int = 4, k: int = 10, **extra: Any) -> AnalyzeRequest:
    """NAV about 10 million; loss and gain lots (short and long term), a few thin instruments
    whose ADV cap binds, a turnover cap, no-buy and no-sell lists, shared wash-sale groups with
    a recent buy, and a cash floor above current cash half of the time."""
    rng = np.random.default_rng(seed)
    ids = [f"S{j:04d}" for j in range(n)]
    price = rng.uniform(10, 300, n)
    w = rng.dirichlet(np.ones(n)) * 0.97
    lots: list[dict[str, Any]] = []
    for j in range(n):
        shares = max(1.0, np.floor(w[j] * 1e7 / price[j] / lots_per))
        for m in range(lots_per):
            lots.append(
                {
                    "lot_id": f"L{j}_{m}",
                    "instrument": ids[j],
                    "quantity": float(shares),
                    "cost_basis": float(price[j] * rng.uniform(0.6, 1.4)),
                    "acquired": (AS_OF - timedelta(days=int(rng.integers(20, 1500)))).isoformat(),
                }
            )
    tgt = w * np.exp(rng.normal(0, 0.4, n))
    tgt = tgt / tgt.sum() * 0.97
    targets = {ids[j]: float(tgt[j]) for j in range(n)}
    targets["CASH"] = 1.0 - float(sum(targets.values()))
    thin = set(rng.choice(n, size=max(1, n // 10), replace=False).tolist())
    groups = {j: f"G{j // 2}" for j in rng.choice(n, size=n // 5, replace=False).tolist()}
    instruments = [
        {
            "id": ids[j],
            "price": float(price[j]),
            "adv_shares": float(rng.uniform(2e3, 2e4) if j in thin else rng.uniform(2e5, 5e6)),
            "daily_volatility": float(rng.uniform(0.01, 0.03)),
            "half_spread_bps": float(rng.uniform(1, 10)),
            "sector": f"sector{j % 7}",
            "lot_size": 1,
            "wash_sale_group": groups.get(j),
        }
        for j in range(n)
    ]
    pick = rng.permutation(n)
    policy: dict[str, Any] = {
        "risk_aversion": float(rng.uniform(2.0, 10.0)),
        "max_turnover": float(rng.uniform(0.05, 0.3)),
        "min_cash_weight": float(rng.choice([0.0, 0.05])),
        "no_buy": [ids[j] for j in pick[:2]],
        "no_sell": [ids[j] for j in pick[2:4]],
        "max_adv_fraction": 0.1,
    }
    policy.update(extra)
    return AnalyzeRequest.model_validate(
        {
            "as_of": AS_OF.isoformat(),
            "portfolio": {"cash": 3e5, "lots": lots},
            "recent_buys": [
                {"instrument": ids[int(pick[4])], "date": AS_OF.isoformat(), "quantity": 10}
            ],
            "targets": targets,
            "instruments": instruments,
            "risk_model": {
                "instruments": ids,
                "factor_exposures": rng.normal(0, 0.3, (n, k)).tolist(),
                "factor_covariance": (np.eye(k) * 0.02).tolist(),
                "specific_variance": rng.uniform(0.01, 0.06, n).tolist(),
            },
            "policy": policy,
        }
    )
