"""Seeded random recommendation requests (JSON bodies of ``POST /v1/analyze``) for tests,
benchmarks and trying the API: an account of ``n`` instruments with ``lots_per`` tax lots each
and a ``k``-factor risk model.

Units as in the request: prices and cost bases in currency per share, ``adv_shares`` in shares
per day, ``daily_volatility`` a fraction per day, ``half_spread_bps`` in basis points.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import numpy as np

SAMPLE_AS_OF = date(2024, 6, 28)
"""Decision date of every sample."""


def random_account(
    seed: int, n: int = 50, lots_per: int = 4, k: int = 10, gains_only: bool = False
) -> dict[str, Any]:
    """The JSON body of a seeded account: about 10 million in holdings plus 300,000 cash, targets
    near the holdings (log-normal noise of 20 %), 2 % cash target, lots acquired 40-1,500
    days ago. With ``gains_only`` no lot is at a loss (so no wash-sale round follows the first
    solve); otherwise cost bases range from 40 % below to 20 % above the price.

    Policy: risk aversion 5, turnover at most 0.5 of NAV, cash floor 1 % of NAV.
    """
    rng = np.random.default_rng(seed)
    ids = [f"S{j:04d}" for j in range(n)]
    price = rng.uniform(10, 300, n)
    w = rng.dirichlet(np.ones(n)) * 0.97
    lots = [
        {
            "lot_id": f"L{j}_{m}",
            "instrument": ids[j],
            "quantity": float(max(1.0, np.floor(w[j] * 1e7 / price[j] / lots_per))),
            "cost_basis": float(price[j] * rng.uniform(0.6, 0.95 if gains_only else 1.2)),
            "acquired": (SAMPLE_AS_OF - timedelta(days=int(rng.integers(40, 1500)))).isoformat(),
        }
        for j in range(n)
        for m in range(lots_per)
    ]
    tgt = w * np.exp(rng.normal(0, 0.2, n))
    tgt = tgt / tgt.sum() * 0.98
    targets = {ids[j]: float(tgt[j]) for j in range(n)}
    targets["CASH"] = 1.0 - float(sum(targets.values()))
    return {
        "as_of": SAMPLE_AS_OF.isoformat(),
        "portfolio": {"cash": 3e5, "lots": lots},
        "targets": targets,
        "instruments": [
            {
                "id": ids[j],
                "price": float(price[j]),
                "adv_shares": float(rng.uniform(2e5, 5e6)),
                "daily_volatility": float(rng.uniform(0.01, 0.03)),
                "half_spread_bps": float(rng.uniform(1, 10)),
                "sector": f"sector{j % 11}",
            }
            for j in range(n)
        ],
        "risk_model": {
            "instruments": ids,
            "factor_exposures": rng.normal(0, 0.3, (n, k)).tolist(),
            "factor_covariance": (np.eye(k) * 0.02).tolist(),
            "specific_variance": rng.uniform(0.01, 0.06, n).tolist(),
        },
        "policy": {"risk_aversion": 5.0, "max_turnover": 0.5, "min_cash_weight": 0.01},
    }
