"""The evaluation shortcuts of the re-check: summed trades, the recent-group mask, the final
trade handed to the report; each gives the values of the plain computation."""

from __future__ import annotations

import numpy as np

from rebalancer.optimizer import DEFAULT_CHAIN, Recommender
from rebalancer.optimizer.data import build_data
from rebalancer.optimizer.samples import random_account
from rebalancer.optimizer.schemas import AnalyzeRequest
from rebalancer.optimizer.terms.base import SummedTradeVec, TradeVec, row_sum
from rebalancer.optimizer.terms.constraints import recent_mask
from rebalancer.optimizer.validation import check_request


def _request(seed: int, recent: bool = False, min_net_benefit: float = 0.0) -> AnalyzeRequest:
    body = random_account(seed, n=12, lots_per=2, k=3)
    if recent:
        body["recent_buys"] = [
            {"instrument": f"S{j:04d}", "date": "2024-06-20", "quantity": 10.0}
            for j in range(0, 12, 3)
        ]
    body["policy"]["min_net_benefit"] = min_net_benefit
    return AnalyzeRequest.model_validate(body)


def test_row_sum_and_summed_trade_match_the_plain_sums() -> None:
    rng = np.random.default_rng(1)
    t = TradeVec(rng.uniform(0, 1e-2, 7), rng.uniform(0, 1e-2, (7, 3)))
    s = t.summed()
    assert isinstance(s, SummedTradeVec)
    assert s.summed() is s
    np.testing.assert_allclose(row_sum(t.lot_sell), t.lot_sell.sum(axis=1), rtol=1e-15)
    np.testing.assert_array_equal(s.sell, t.sell)
    np.testing.assert_array_equal(s.z, t.z)
    np.testing.assert_array_equal(s.traded, t.traded)
    np.testing.assert_array_equal(s.buy, t.buy)
    np.testing.assert_array_equal(s.lot_sell, t.lot_sell)


def test_recent_mask_is_the_membership_of_each_instruments_group() -> None:
    req = _request(3, recent=True)
    data = build_data(req, check_request(req))
    assert data.recent_groups
    expected = np.array([g in data.recent_groups for g in data.groups], dtype=bool)
    np.testing.assert_array_equal(recent_mask(data), expected)
    codes = [k for k, g in enumerate(data.group_names) if g in data.recent_groups]
    np.testing.assert_array_equal(recent_mask(data), np.isin(data.group_index, codes))


def test_no_trade_reports_the_zero_trade() -> None:
    rec = Recommender(solvers=DEFAULT_CHAIN)
    resp = rec.analyze(_request(5, min_net_benefit=1e9))
    assert resp.decision.value == "no_trade"
    assert resp.trades == []
    assert resp.cash_after == resp.cash_before
    assert resp.drift_after == resp.drift_before


def test_rebalance_answer_is_self_consistent() -> None:
    rec = Recommender(solvers=DEFAULT_CHAIN)
    resp = rec.analyze(_request(7, recent=True))
    assert resp.decision.value == "rebalance"
    bought = sum(t.value for t in resp.trades if t.side.value == "buy")
    sold = sum(t.value for t in resp.trades if t.side.value == "sell")
    assert abs(resp.cash_after - (resp.cash_before - bought + sold)) < 1e-6 * resp.nav
