"""Wash-sale group settlement (optimizer/wash.py): each conflicting group keeps the side that
contributes more to the objective; one-sided groups keep their side."""

from __future__ import annotations

import numpy as np
import pytest
from opt_factory import inst, lot, request

from rebalancer.optimizer.data import ProblemData, build_data
from rebalancer.optimizer.problem import CompiledProblem
from rebalancer.optimizer.terms.base import TradeVec
from rebalancer.optimizer.wash import settle_all


def _data(target_x: float) -> ProblemData:
    """X: 0.5 of NAV in one lot at a loss (basis 150, price 100); Z: the rest, a gain lot."""
    req = request(
        cash=0,
        lots=[lot("x1", "X", 100, 150.0), lot("z1", "Z", 100, 50.0)],
        targets={"X": target_x, "Z": 1.0 - target_x},
        instruments=[inst("X"), inst("Z")],
        risk_model={"instruments": ["X", "Z"], "covariance": [[0.04, 0.0], [0.0, 0.04]]},
        policy={"risk_aversion": 50.0, "short_term_rate": 0.3, "long_term_rate": 0.15},
    )
    return build_data(req)


def _trade(data: ProblemData, sell_x: float, buy_x: float, buy_z: float = 0.0) -> TradeVec:
    lot_sell = np.zeros_like(data.lot_w)
    lot_sell[0, 0] = sell_x
    return TradeVec(np.array([buy_x, buy_z]), lot_sell)


def test_a_net_seller_keeps_its_loss_sales_and_stops_buying() -> None:
    data = _data(target_x=0.2)
    assert data.lot_loss.tolist() == [[True], [False]]
    # harvest: sell all of X at a loss, buy 0.2 back; closing the sales would keep X at 0.5
    assert settle_all(data, _trade(data, 0.5, 0.2), 1e-7) == ["X"]
    assert data.buy_ub[0] == 0.0 and data.lot_ub[0, 0] > 0.0


def test_a_net_buyer_keeps_its_buys_and_stops_selling_at_a_loss() -> None:
    data = _data(target_x=0.8)
    # sells 0.1 at a loss and buys 0.4: closing the buys would keep X at 0.5
    assert settle_all(data, _trade(data, 0.1, 0.4), 1e-7) == ["X"]
    assert data.lot_ub[0, 0] == 0.0 and data.buy_ub[0] > 0.0


def test_one_sided_groups_keep_their_side() -> None:
    data = _data(target_x=0.2)
    assert settle_all(data, _trade(data, 0.3, 0.0, buy_z=0.3), 1e-7) == []
    assert data.buy_ub[0] == 0.0 and data.lot_ub[0, 0] > 0.0  # X only sells at a loss
    assert data.buy_ub[1] > 0.0 and data.lot_ub[1, 0] > 0.0  # Z buys; its lot is no loss


@pytest.mark.parametrize("seed", range(6))
def test_the_choice_is_the_way_out_that_raises_the_numpy_objective_less(seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = _data(target_x=float(rng.uniform(0.1, 0.9)))
    sold, bought = float(rng.uniform(0.01, 0.5)), float(rng.uniform(0.01, 0.5))
    t = _trade(data, sold, bought)
    both = min(sold, bought)
    prob = CompiledProblem(data.shape)
    close_sales = prob.objective(data, _trade(data, 0.0, bought - both))
    close_buys = prob.objective(data, _trade(data, sold - both, 0.0))
    settle_all(data, t, 1e-7)
    if close_sales < close_buys - 1e-12:
        assert data.lot_ub[0, 0] == 0.0 and data.buy_ub[0] > 0.0
    elif close_buys < close_sales - 1e-12:
        assert data.buy_ub[0] == 0.0 and data.lot_ub[0, 0] > 0.0


def test_a_group_that_does_not_trade_may_still_buy_but_no_longer_sell_at_a_loss() -> None:
    data = _data(target_x=0.2)
    # X does not trade at all while Z buys: X keeps its buys open, its loss lot closes
    assert settle_all(data, _trade(data, 0.0, 0.0, buy_z=0.1), 1e-7) == []
    assert data.lot_ub[0, 0] == 0.0 and data.buy_ub[0] > 0.0
    assert data.buy_ub[1] > 0.0 and data.lot_ub[1, 0] > 0.0  # Z: no loss lot, nothing closes


@pytest.mark.parametrize("seed", range(8))
def test_after_settling_no_group_can_both_sell_at_a_loss_and_buy(seed: int) -> None:
    """Every group with a loss lot it may sell has one side closed, whatever it did in the
    answer settled (so the re-solve never needs another wash-sale round)."""
    rng = np.random.default_rng(seed)
    data = _data(target_x=float(rng.uniform(0.1, 0.9)))
    kind = seed % 4  # conflict, sells only, buys only, no trade
    sold = float(rng.uniform(0.01, 0.5)) if kind in (0, 1) else 0.0
    bought = float(rng.uniform(0.01, 0.5)) if kind in (0, 2) else 0.0
    settle_all(data, _trade(data, sold, bought, buy_z=0.05), 1e-7)
    can_sell_at_a_loss = ((data.lot_ub > 0) & data.lot_loss).any(axis=1)
    can_buy = data.buy_ub > 0
    assert not (can_sell_at_a_loss & can_buy).any()


@pytest.mark.parametrize("seed", range(4))
def test_one_instrument_per_group_gives_the_same_deltas_as_the_general_grouping(seed: int) -> None:
    from opt_factory import random_request

    from rebalancer.optimizer import wash

    data = build_data(random_request(seed, n=12, lots_per=3, k=2))
    rng = np.random.default_rng(seed)
    sells = rng.uniform(0, 1, data.lot_w.shape) * data.lot_w * (rng.random(data.lot_w.shape) < 0.5)
    t = TradeVec(rng.uniform(0, 1e-2, data.n) * (rng.random(data.n) < 0.5), sells)
    base = wash._Base(data, t)
    assert base.single
    buy, loss_sell = t.buy * rng.uniform(0, 1, data.n), base.loss_now * rng.uniform(0, 1, data.n)
    fast = wash._delta(data, t, base, buy, loss_sell)
    base.single = False
    assert np.array_equal(fast, wash._delta(data, t, base, buy, loss_sell))
