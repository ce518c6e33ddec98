"""Open limits do not wreck the conic solver's scaling, and an inaccurate answer is never used
when its objective disagrees with the NumPy recomputation."""

from __future__ import annotations

from typing import Any

import numpy as np

from rebalancer.optimizer import Recommender
from rebalancer.optimizer.data import BIG, build_data
from rebalancer.optimizer.enums import SolverName, SolveStatus
from rebalancer.optimizer.problem import objective_agrees
from rebalancer.optimizer.schemas import AnalyzeRequest


def _request(adv_shares: float) -> AnalyzeRequest:
    """Two instruments at 100, no buys allowed, B slightly overweight (a backtest state)."""
    inst: dict[str, Any] = {
        "price": 100.0,
        "adv_shares": adv_shares,
        "daily_volatility": 0.01,
        "half_spread_bps": 5.0,
        "asset_class": "equity",
        "lot_size": 1,
    }
    return AnalyzeRequest.model_validate(
        {
            "as_of": "2024-01-31",
            "portfolio": {
                "cash": 98.449969,
                "lots": [
                    {
                        "lot_id": "a1",
                        "instrument": "A",
                        "quantity": 83,
                        "cost_basis": 120,
                        "acquired": "2020-01-02",
                    },
                    {
                        "lot_id": "b1",
                        "instrument": "B",
                        "quantity": 86,
                        "cost_basis": 100,
                        "acquired": "2020-01-02",
                    },
                ],
            },
            "targets": {"A": 0.5, "B": 0.5, "CASH": 0.0},
            "instruments": [
                {"id": "A", "sector": "s1", **inst},
                {"id": "B", "sector": "s2", **inst},
            ],
            "risk_model": {"instruments": ["A", "B"], "covariance": [[0.0252, 0.0], [0.0, 0.0252]]},
            "policy": {"risk_aversion": 50.0, "no_buy": ["A", "B"], "min_trade_value": 50.0},
        }
    )


def test_an_open_adv_cap_is_capped_at_big() -> None:
    data = build_data(_request(1e13))
    assert np.all(data.adv_cap == BIG)
    small = build_data(_request(1e3))
    assert np.all(small.adv_cap < 1.0)


def test_huge_adv_solves_accurately_and_agrees_with_numpy() -> None:
    """1e13 shares of daily volume once made Clarabel answer optimal_inaccurate with an
    objective 1.6e-3 off its own trade's; the request then failed validation."""
    rec = Recommender(solvers=(SolverName.CLARABEL,))
    out = rec.analyze(_request(1e13))
    assert out.solver.status == SolveStatus.OPTIMAL
    same = Recommender(solvers=(SolverName.CLARABEL,)).analyze(_request(1e6))
    assert [(t.instrument, t.side, t.quantity) for t in out.trades] == [
        (t.instrument, t.side, t.quantity) for t in same.trades
    ]
    assert any(t.instrument == "B" and str(t.side) == "sell" for t in out.trades)


def test_objective_agreement_tolerance() -> None:
    assert objective_agrees(1.0e-4, 1.0e-4 + 5e-8)
    assert not objective_agrees(1.7599e-4, 1.7570e-4)
