"""The shortcuts of the response rendering and the share rounding give the plain definitions."""

from __future__ import annotations

import numpy as np
from opt_factory import diag_cov, inst, lot, request

from rebalancer.optimizer import Recommender, Side
from rebalancer.optimizer.data import build_data
from rebalancer.optimizer.report import _drift_orders, drift_report, risk_report
from rebalancer.optimizer.rounding import _fill, _fill_in_order
from rebalancer.optimizer.samples import random_account
from rebalancer.optimizer.schemas import AnalyzeRequest
from rebalancer.optimizer.terms.base import volatility
from rebalancer.optimizer.validation import check_request

REC = Recommender()


def test_trades_are_in_instrument_order_a_sell_before_the_buy_with_its_own_lots() -> None:
    for seed in range(3):
        req = AnalyzeRequest.model_validate(random_account(seed, n=20, lots_per=2, k=3))
        out = REC.analyze(req)
        ids = [x.id for x in req.instruments]
        keys = [(ids.index(t.instrument), t.side is Side.BUY) for t in out.trades]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        lots_of = {lt.lot_id: lt.instrument for lt in req.portfolio.lots}
        for t in out.trades:
            assert all(lots_of[s.lot_id] == t.instrument for s in t.lots)
            assert (len(t.lots) > 0) == (t.side is Side.SELL)


def test_fill_in_order_is_fill_along_the_order() -> None:
    rng = np.random.default_rng(3)
    room = rng.uniform(0, 5, (30, 4)).round()
    order = np.argsort(rng.uniform(size=(30, 4)), axis=1)
    rest = rng.uniform(0, 12, 30)
    want = np.zeros_like(room)
    np.put_along_axis(want, order, _fill(np.take_along_axis(room, order, axis=1), rest), axis=1)
    assert np.array_equal(_fill_in_order(room, order, rest), want)


def test_drift_labels_in_order_of_first_appearance_with_or_without_precomputed_orders() -> None:
    names = ["B", "A", "C"]
    req = request(
        cash=1000.0,
        lots=[lot(f"{x}1", x, 10, 90.0) for x in names],
        targets={"B": 0.3, "A": 0.3, "C": 0.3, "CASH": 0.1},
        instruments=[
            inst("B", sector="zeta", asset_class="bond"),
            inst("A", sector="alpha", asset_class="equity"),
            inst("C", sector="zeta", asset_class="equity"),
        ],
        risk_model=diag_cov(names),
    )
    data = build_data(req, check_request(req))
    plain = drift_report(data, data.w, 0.1)
    assert list(plain.by_sector) == ["zeta", "alpha", "CASH"]
    assert list(plain.by_asset_class) == ["bond", "equity", "CASH"]
    assert drift_report(data, data.w, 0.1, _drift_orders(data)) == plain


def test_risk_report_volatilities_are_the_plain_volatilities() -> None:
    req = AnalyzeRequest.model_validate(random_account(1, n=15, lots_per=2, k=3))
    data = build_data(req, check_request(req))
    after = data.w * 0.9
    rep = risk_report(data, data.w, after)
    assert rep.volatility_before == volatility(data, data.w)
    assert rep.volatility_after == volatility(data, after)
    assert rep.var_after == data.z_alpha * volatility(data, after)
