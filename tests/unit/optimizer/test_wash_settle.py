"""Wash-sale group settlement (optimizer/wash.py): each conflicting group keeps the side that
contributes more to the objective; one-sided groups keep their side."""

from __future__ import annotations

import numpy as np
import pytest
from opt_factory import inst, lot, request

from rebalancer.optimizer.data import ProblemData, build_data
from rebalancer.optimizer.problem import CompiledProblem
from rebalancer.optimizer.schemas import AnalyzeRequest
from rebalancer.optimizer.terms.base import TradeVec
from rebalancer.optimizer.wash import MATERIAL, settle_all


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


def test_trades_below_the_material_size_do_not_count() -> None:
    """An interior-point answer leaves about 1e-7 to 1e-5 of NAV where the optimum has 0 (the
    fast path more than Clarabel): such a buy next to a real loss sale is no conflict, and a
    group whose sides are both that small does not trade. Both chains then settle alike."""
    data = _data(target_x=0.2)
    tiny = 0.5 * MATERIAL
    # a real loss sale and a residual buy: a seller, no conflict reported
    assert settle_all(data, _trade(data, 0.3, tiny, buy_z=0.3), 1e-7) == []
    assert data.buy_ub[0] == 0.0 and data.lot_ub[0, 0] > 0.0
    # residuals on both sides: no trade, so it may buy but no longer sell at a loss
    data = _data(target_x=0.2)
    assert settle_all(data, _trade(data, tiny, tiny), 1e-7) == []
    assert data.lot_ub[0, 0] == 0.0 and data.buy_ub[0] > 0.0
    # just above it both sides count: a conflict, settled by the objective
    data = _data(target_x=0.2)
    assert settle_all(data, _trade(data, 0.3, 2 * MATERIAL), 1e-7) == ["X"]


def test_the_fast_chain_settles_like_the_reference_on_residual_trades() -> None:
    """Seeded benchmark accounts whose fast answers left residual buys in groups Clarabel
    does not buy: with the material size both chains settle the same groups and reach the
    same improvement (before, 99.68 % to 99.91 % of the reference's on these seeds)."""
    from bench.analyze import make_request

    from rebalancer.optimizer import FAST_CHAIN, Recommender

    ref, fast = Recommender(), Recommender(solvers=FAST_CHAIN)
    for seed in (5, 93, 100):
        req = make_request(seed, 50)
        a, b = ref.analyze(req), fast.analyze(req)
        gain_a = a.objective_before.total - a.objective.total
        gain_b = b.objective_before.total - b.objective.total
        assert gain_b >= 0.9999 * gain_a, (seed, gain_b / gain_a)


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


def test_settling_by_net_keeps_each_groups_larger_side() -> None:
    from rebalancer.optimizer.wash import settle_by_net

    data = _data(target_x=0.2)
    settle_by_net(data, _trade(data, 0.3, 0.1), 1e-7)  # X: net seller at a loss
    assert data.buy_ub[0] == 0.0 and data.lot_ub[0, 0] > 0.0
    data = _data(target_x=0.8)
    settle_by_net(data, _trade(data, 0.1, 0.3), 1e-7)  # X: net buyer
    assert data.lot_ub[0, 0] == 0.0 and data.buy_ub[0] > 0.0
    data = _data(target_x=0.2)
    settle_by_net(data, _trade(data, 0.0, 0.0), 1e-7)  # no trade: no loss sales
    assert data.lot_ub[0, 0] == 0.0 and data.buy_ub[0] > 0.0


def _conflict_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first wash-sale check of the next answer reports a conflict, whatever the solver
    answered (later checks are the real ones)."""
    from rebalancer.optimizer.terms.constraints import WashSale

    real, calls = WashSale.conflicts, []

    def first_conflicts(
        self: WashSale, data: ProblemData, t: TradeVec, tol: float = 1e-9
    ) -> dict[str, tuple[float, float]]:
        calls.append(1)
        return {"forced": (1.0, 1.0)} if len(calls) == 1 else real(self, data, t, tol)

    monkeypatch.setattr(WashSale, "conflicts", first_conflicts)


def _liquidation(seed: int) -> AnalyzeRequest:
    from opt_factory import random_request

    return random_request(seed, min_cash_weight=0.99)  # raise cash: almost every lot sells


def test_a_settling_that_closes_loss_sales_the_cash_floor_needs_is_redone_by_net(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Settling by objective alone may close the loss sales a cash floor needs (seen on the fast
    chain: a feasible liquidation answered as infeasible). Here every settling closes all loss
    sales, so only the engine's fallback to the net side can answer."""
    from rebalancer.optimizer import engine, wash
    from rebalancer.optimizer.enums import Decision

    def close_every_loss_sale(data: ProblemData, t: TradeVec, tol: float) -> list[str]:
        data.lot_ub[data.lot_loss] = 0.0
        return []

    monkeypatch.setattr(wash, "settle_all", close_every_loss_sale)
    _conflict_first(monkeypatch)
    req = _liquidation(0)
    data = build_data(req)
    assert data.lot_loss.any()
    out = engine.Recommender().analyze(req)
    assert out.decision is Decision.REBALANCE
    assert out.cash_after >= 0.99 * out.nav
    sold_at_a_loss = {s.lot_id for t in out.trades for s in t.lots if s.realized_gain < 0}
    assert sold_at_a_loss  # the loss lots the floor needs are sold
    bought = {t.instrument for t in out.trades if t.side.value == "buy"}
    sold = {t.instrument for t in out.trades for s in t.lots if s.realized_gain < 0}
    assert not bought & sold  # and never bought back in the same answer


@pytest.mark.parametrize("seed", range(3))
def test_liquidations_are_answered_on_both_chains(seed: int) -> None:
    from rebalancer.optimizer import DEFAULT_CHAIN, FAST_CHAIN, Recommender

    req = _liquidation(seed)
    for chain in (FAST_CHAIN, DEFAULT_CHAIN):
        out = Recommender(solvers=chain).analyze(req)
        assert out.cash_after >= 0.99 * out.nav, chain


def test_an_infeasible_answer_leaves_the_requests_bounds_as_they_were(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The tightened data shares its bound arrays with the request's: a settling that ends
    infeasible must not leave its closed sides behind for the untightened retry."""
    from rebalancer.optimizer import Recommender, wash
    from rebalancer.optimizer.engine import tightened

    def close_every_loss_sale(data: ProblemData, t: TradeVec, tol: float) -> list[str]:
        data.lot_ub[data.lot_loss] = 0.0
        return []

    monkeypatch.setattr(wash, "settle_all", close_every_loss_sale)
    monkeypatch.setattr(wash, "settle_by_net", close_every_loss_sale)
    rec = Recommender()
    data = build_data(_liquidation(0))
    buy0, lot0 = data.buy_ub.copy(), data.lot_ub.copy()
    prob, _ = rec.problem_for(data.shape)
    _conflict_first(monkeypatch)
    prob.set_relaxed(set())
    res, solves = rec._solve_refined(prob, tightened(data))
    assert res.trade is None and solves == 3  # first answer, settled, settled by net
    assert np.array_equal(data.buy_ub, buy0) and np.array_equal(data.lot_ub, lot0)
