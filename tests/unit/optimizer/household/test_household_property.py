"""The household answer is never worse than the accounts solved one by one (seeded random
small households, with and without household targets)."""

from __future__ import annotations

import numpy as np
import pytest
from hh_factory import random_household

from rebalancer.optimizer.engine import Recommender
from rebalancer.optimizer.enums import Side
from rebalancer.optimizer.household import HouseholdRecommender
from rebalancer.optimizer.household.data import AccountPart
from rebalancer.optimizer.household.problem import HouseholdTrade
from rebalancer.optimizer.household.report import objective
from rebalancer.optimizer.household.wash import conflicts
from rebalancer.optimizer.response_schemas import AnalyzeResponse
from rebalancer.optimizer.terms.base import TradeVec

SINGLE = Recommender()
HOUSEHOLD = HouseholdRecommender()
ROUNDING_TOL = 2e-5
"""Rounding to whole shares may cost the household answer a little against another rounded
answer (fraction of household NAV); the continuous optimum has no such slack."""


def _as_trade(a: AccountPart, resp: AnalyzeResponse) -> TradeVec:
    d = a.data
    t = TradeVec.zero(d.shape)
    pos = {lot_id: (i, j) for i, row in enumerate(d.lot_ids) for j, lot_id in enumerate(row)}
    for tr in resp.trades:
        i = d.ids.index(tr.instrument)
        if tr.side is Side.BUY:
            t.buy[i] = tr.quantity * d.price[i] / d.nav
        for s in tr.lots:
            t.lot_sell[pos[s.lot_id]] = s.quantity * d.price[i] / d.nav
    return t


@pytest.mark.parametrize("with_targets", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_household_never_worse_than_accounts_alone(seed: int, with_targets: bool) -> None:
    req = random_household(seed, n_accounts=3, n=5, targets=with_targets)
    relaxed, hh, _ = HOUSEHOLD.relaxed(req)
    alone = HouseholdTrade(
        [_as_trade(a, SINGLE.analyze(a.request)) for a in hh.accounts], np.zeros(len(hh.links))
    )
    assert not conflicts(hh, alone.trades)  # gains only: the stacked answer is feasible
    stacked = objective(hh, alone)
    assert relaxed <= stacked + 1e-9
    rounded = HOUSEHOLD.analyze(req).objective.total
    assert rounded <= stacked + ROUNDING_TOL
