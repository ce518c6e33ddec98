"""Household optimizer: asset location, cross-account wash sales, transfers, input rules."""

from __future__ import annotations

from typing import Any

import pytest
from hh_factory import account, day, diag_cov, household, inst, lot

from rebalancer.domain.errors import InvalidInput
from rebalancer.optimizer.enums import Decision, Side
from rebalancer.optimizer.household import HouseholdRecommender, HouseholdResponse

FREE = {"impact_coefficient": 0.0}
REC = HouseholdRecommender()


def _trades(r: HouseholdResponse) -> dict[str, dict[tuple[str, str], float]]:
    return {
        a.account_id: {(t.instrument, str(t.side)): t.quantity for t in a.analysis.trades}
        for a in r.accounts
    }


def test_bonds_land_in_the_tax_deferred_account() -> None:
    # By hand: household of 200,000 cash, target 50 % EQ / 50 % BND, no trading costs. Any
    # split of the purchases tracks the target equally well; only asset location differs:
    # 1 % a year of drag on bonds held in the taxable account. Best: the IRA's 100,000 buy
    # 2,000 BND at 50, the taxable account's 100,000 buy 1,000 EQ at 100.
    insts = [
        inst("EQ", 100.0, half_spread_bps=0.0),
        inst("BND", 50.0, half_spread_bps=0.0, asset_class="fixed_income"),
    ]
    tg = {"EQ": 0.5, "BND": 0.5, "CASH": 0.0}
    req = household(
        [
            account(
                "TAX", "taxable", cash=100_000, lots=[], targets=tg, instruments=insts, policy=FREE
            ),
            account(
                "IRA",
                "tax_deferred",
                cash=100_000,
                lots=[],
                targets=tg,
                instruments=insts,
                policy=FREE,
            ),
        ],
        targets=tg,
        risk_model=diag_cov(["BND", "EQ"]),
        policy={"risk_aversion": 1000.0},
    )
    r = REC.analyze(req)
    assert r.decision == Decision.REBALANCE
    assert _trades(r) == {
        "TAX": {("EQ", "buy"): 1000.0},
        "IRA": {("BND", "buy"): 2000.0},
    }
    assert r.location_after["fixed_income"] == {"taxable": 0.0, "tax_deferred": 100_000.0}
    assert r.objective.location == pytest.approx(0.0, abs=1e-9)
    assert r.drift_after is not None and r.drift_after.household == pytest.approx(0.0, abs=1e-9)


def _wash_household(**kw: Any) -> Any:
    """TAX holds X at a loss and wants Y; the IRA holds cash and wants X2 (same group as X)."""
    insts = [
        inst("X", 100.0, wash_sale_group="G"),
        inst("X2", 100.0, wash_sale_group="G"),
        inst("Y", 100.0),
    ]
    ira_lots = kw.pop("ira_lots", [])
    tax_lots = kw.pop("tax_lots", [lot("t1", "X", 500, 150.0)])
    return household(
        [
            account(
                "TAX",
                "taxable",
                cash=1_000,
                lots=tax_lots,
                targets={"Y": 0.98, "CASH": 0.02},
                instruments=insts,
                policy={"risk_aversion": 50.0},
            ),
            account(
                "IRA",
                "tax_deferred",
                cash=50_000,
                lots=ira_lots,
                targets={"X2": 0.98, "CASH": 0.02},
                instruments=insts,
                policy={"risk_aversion": 50.0},
            ),
        ],
        **kw,
    )


def test_loss_sale_and_buy_in_another_account_never_together() -> None:
    r = REC.analyze(_wash_household())
    t = _trades(r)
    tax_sells_loss = ("X", "sell") in t["TAX"]
    ira_buys_group = ("X2", "buy") in t["IRA"] or ("X", "buy") in t["IRA"]
    assert tax_sells_loss or ira_buys_group  # there is something to do
    assert not (tax_sells_loss and ira_buys_group)
    assert r.wash_sale.settled_groups == ["G"]


@pytest.mark.parametrize(("days_ago", "refused"), [(10, True), (30, True), (31, False)])
def test_taxable_loss_sale_then_retirement_buy(days_ago: int, refused: bool) -> None:
    # TAX sold X at a loss ``days_ago`` days ago (it now holds Y at target); the IRA wants X2,
    # substantially identical to X: within 30 days the buy is refused, after that allowed.
    sale = {"account_id": "TAX", "instrument": "X", "date": day(days_ago)}
    req = _wash_household(recent_loss_sales=[sale], tax_lots=[lot("t1", "Y", 490, 80.0)])
    t = _trades(REC.analyze(req))
    if refused:
        assert ("X2", "buy") not in t["IRA"]
        assert "IRA:X2" in REC.analyze(req).wash_sale.blocked_buys
    else:
        assert t["IRA"][("X2", "buy")] > 400


def test_recent_buy_in_the_ira_blocks_the_taxable_loss_sale() -> None:
    r = REC.analyze(_wash_household(ira_lots=[lot("i1", "X2", 10, 100.0, days_ago=10)]))
    assert "TAX:t1" in r.wash_sale.blocked_loss_lots
    assert ("X", "sell") not in _trades(r)["TAX"]


def test_loss_in_a_tax_deferred_account_is_not_wash_blocked() -> None:
    insts = [inst("X", 100.0), inst("Y", 100.0)]
    req = household(
        [
            account(
                "IRA",
                "tax_deferred",
                cash=0.0,
                lots=[lot("i1", "X", 500, 150.0), lot("i2", "X", 10, 90.0, days_ago=5)],
                targets={"Y": 1.0},
                instruments=insts,
                policy={"risk_aversion": 50.0},
            ),
        ]
    )
    r = REC.analyze(req)
    assert r.wash_sale.blocked_loss_lots == []
    sold = {s.lot_id for t in r.accounts[0].analysis.trades for s in t.lots}
    assert "i1" in sold
    assert r.accounts[0].analysis.tax.estimated_tax == 0.0


def _spouses(links: list[dict[str, Any]]) -> Any:
    insts = [inst("X", 100.0)]
    tg = {"X": 0.95, "CASH": 0.05}
    return household(
        [
            account(
                "A", "taxable", cash=100_000, lots=[], targets={"CASH": 1.0}, instruments=insts
            ),
            account(
                "B",
                "taxable",
                cash=0.0,
                lots=[lot("b1", "X", 10, 50.0)],
                targets=tg,
                instruments=insts,
            ),
        ],
        targets={"X": 0.5, "CASH": 0.5},
        risk_model=diag_cov(["X"]),
        links=links,
        policy={"risk_aversion": 200.0, "account_tracking_weight": 0.0},
    )


def test_accounts_self_finance_unless_linked() -> None:
    alone = REC.analyze(_spouses([]))
    assert all(t.side is Side.BUY and t.quantity > 0 for t in alone.accounts[0].analysis.trades)
    assert alone.transfers == []
    linked = REC.analyze(_spouses([{"from_account": "A", "to_account": "B"}]))
    assert linked.transfers and linked.transfers[0].from_account == "A"
    for a in linked.accounts:
        assert a.analysis.cash_after >= -1e-6
    assert sum(a.transfer_in for a in linked.accounts) == pytest.approx(0.0, abs=1e-6)


def test_price_disagreement_names_the_account() -> None:
    tg = {"X": 1.0}
    req = household(
        [
            account("A", "taxable", cash=100.0, lots=[], targets=tg, instruments=[inst("X", 10.0)]),
            account("B", "taxable", cash=100.0, lots=[], targets=tg, instruments=[inst("X", 11.0)]),
        ]
    )
    with pytest.raises(InvalidInput) as err:
        REC.analyze(req)
    assert err.value.fields == ["accounts[1].request.instruments"]


def test_household_targets_need_a_risk_model() -> None:
    tg = {"X": 1.0}
    req = household(
        [account("A", "taxable", cash=100.0, lots=[], targets=tg, instruments=[inst("X")])],
        targets=tg,
    )
    with pytest.raises(InvalidInput) as err:
        REC.analyze(req)
    assert err.value.fields == ["risk_model"]


def test_sector_risk_budgets_are_refused_naming_the_field() -> None:
    tg = {"X": 1.0}
    req = household(
        [
            account(
                "A",
                "taxable",
                cash=100.0,
                lots=[],
                targets=tg,
                instruments=[inst("X")],
                policy={"max_sector_risk_share": {"s": 0.5}},
            )
        ]
    )
    with pytest.raises(InvalidInput) as err:
        REC.analyze(req)
    assert err.value.fields == ["accounts[0].request.policy.max_sector_risk_share"]
