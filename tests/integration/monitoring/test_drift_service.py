"""Hand-calculated drift at every level through the service: market data -> book drift ->
snapshots -> drift view (with trends); position changes refresh the snapshot."""

from __future__ import annotations

import math
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from monhelpers import QUIET, Book

from rebalancer.adapters import orm
from rebalancer.contracts import PortfolioStateUpdatedV1
from rebalancer.service_layer.handlers import monitoring, portfolio

pytestmark = pytest.mark.integration

SPEC = {"A": ("tech", "equity"), "B": ("tech", "equity"), "C": ("bonds", "fixed_income")}


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, abs_tol=1e-9)


def test_hand_calculated_drift_at_every_level(engine: Any) -> None:
    bk = Book(engine)
    i = bk.instruments(SPEC)
    mid = bk.model({i["A"]: 0.3, i["B"]: 0.3, i["C"]: 0.3}, 0.1, QUIET)
    # 40 A, 30 B, 20 C at 10 and 100 cash: NAV 1000, weights A .4 B .3 C .2 cash .1
    aid = bk.account({mid: 1.0}, {i["A"]: 40, i["B"]: 30, i["C"]: 20}, "100")
    bk.tick({i["A"]: 10, i["B"]: 10, i["C"]: 10})

    (snap,) = bk.rows(orm.drift_snapshots, account_id=aid)
    assert snap.nav == Decimal("1000") and _close(snap.total_abs_drift, 0.2)
    assert _close(snap.max_abs_drift, 0.1) and snap.tracking_error is not None
    lv = snap.details["levels"]  # detailed: the 3 % instrument band is breached
    assert _close(lv["instrument"][i["A"]]["absolute"], 0.1)
    assert _close(lv["instrument"][i["A"]]["relative"], 0.1 / 0.3)
    assert _close(lv["instrument"][i["B"]]["absolute"], 0.0)
    assert _close(lv["instrument"][i["C"]]["absolute"], -0.1)
    assert _close(lv["instrument"]["CASH"]["absolute"], 0.0)
    assert _close(lv["sector"]["tech"]["absolute"], 0.1)  # .7 vs .6
    assert _close(lv["sector"]["bonds"]["absolute"], -0.1)
    assert _close(lv["asset_class"]["equity"]["absolute"], 0.1)
    assert _close(lv["asset_class"]["fixed_income"]["absolute"], -0.1)
    assert _close(lv["sleeve"][next(iter(lv["sleeve"]))]["absolute"], 0.0)
    acct = snap.details["summaries"]["instrument"]
    assert _close(acct["sum_abs"], 0.2) and _close(acct["turnover"], 0.1)

    (ev,) = bk.evaluations(aid, "threshold")
    assert ev.fired and ev.rebalance_id is not None
    fired_levels = {b["level"] for b in ev.inputs["bands"] if b["fired"]}
    assert fired_levels == {"instrument", "asset_class", "account"}

    with bk.uow() as uow:
        view = monitoring.drift_view(uow, aid)
    assert _close(view["levels"]["sector"]["tech"]["absolute"], 0.1)
    assert view["nav"] == 1000.0 and view["snapshots"] == 1 and view["trend"] is None


def test_sleeve_level_and_trend(engine: Any) -> None:
    bk = Book(engine)
    i = bk.instruments(SPEC)
    m1 = bk.model({i["A"]: 0.5, i["C"]: 0.5}, 0.0, {**QUIET, "sleeve": 0.05})
    m2 = bk.model({i["B"]: 1.0}, 0.0, QUIET)
    aid = bk.account({m1: 0.6, m2: 0.4}, {i["A"]: 40, i["B"]: 30, i["C"]: 20}, "100")
    bk.tick({i["A"]: 10, i["B"]: 10, i["C"]: 10})
    (snap,) = bk.rows(orm.drift_snapshots, account_id=aid)
    sleeves = snap.details["levels"]["sleeve"]
    # A and C are attributed to sleeve 1 (.4 + .2), B to sleeve 2 (.3), cash by share (.06/.04)
    by_target = {round(d["target"], 6): d for d in sleeves.values()}
    assert _close(by_target[0.6]["absolute"], 0.06) and _close(by_target[0.4]["absolute"], -0.06)
    (ev,) = bk.evaluations(aid, "threshold")
    assert any(b["level"] == "sleeve" and b["fired"] for b in ev.inputs["bands"])

    # drift grows: A up 10 %/day -> slope > 0 and a finite time to breach of the trends
    bk.tick({i["A"]: 11, i["B"]: 10, i["C"]: 10})
    bk.tick({i["A"]: 12, i["B"]: 10, i["C"]: 10})
    with bk.uow() as uow:
        view = monitoring.drift_view(uow, aid)
    assert view["snapshots"] == 3 and view["trend"]["slope_per_day"] > 0
    instrument = next(t for t in view["trends"] if t["level"] == "instrument")
    assert instrument["points"] == 3 and instrument["trend"]["slope_per_day"] > 0
    assert instrument["trend"]["days_to_breach"] == 0.0  # already beyond it
    assert {t["level"] for t in view["trends"]} >= {"sleeve", "account", "asset_class"}


def test_portfolio_state_update_refreshes_the_snapshot(engine: Any) -> None:
    bk = Book(engine)
    i = bk.instruments(SPEC)
    mid = bk.model({i["A"]: 0.5}, 0.5, QUIET)
    aid = bk.account({mid: 1.0}, {i["A"]: 50}, "500")  # on target at 10
    day = bk.tick({i["A"]: 10})
    (before,) = bk.rows(orm.drift_snapshots, account_id=aid)
    assert _close(before.total_abs_drift, 0.0) and before.details["detail"] == "summary"
    with bk.uow() as uow:
        portfolio.apply_portfolio_state(
            uow,
            PortfolioStateUpdatedV1(
                account_id=aid,
                as_of=day,
                cash=Decimal("0"),
                lots=[
                    {
                        "lot_id": "x1",
                        "instrument": i["A"],
                        "quantity": "100",
                        "cost_basis": "1",
                        "acquired": "2024-01-02",
                    }
                ],
            ),
        )
    (after,) = bk.rows(orm.drift_snapshots, account_id=aid)  # same market time, replaced
    assert after.ts == before.ts and _close(after.total_abs_drift, 1.0)
    assert {(a.level, a.key) for a in bk.alerts(aid)} >= {("instrument", i["A"])}
    assert bk.evaluations(aid) == [] or all(
        e.ts == before.ts for e in bk.evaluations(aid)
    )  # a refresh logs no trigger evaluation by default


def test_account_without_prices_is_skipped(engine: Any) -> None:
    bk = Book(engine)
    i = bk.instruments(SPEC)
    mid = bk.model({i["A"]: 0.5, i["B"]: 0.5}, 0.0, QUIET)
    aid = bk.account({mid: 1.0}, {i["A"]: 10}, "0")
    bk.tick({i["A"]: 10})  # no price of B yet
    assert bk.rows(orm.drift_snapshots, account_id=aid) == []
    assert date(2024, 1, 1) < bk.day
