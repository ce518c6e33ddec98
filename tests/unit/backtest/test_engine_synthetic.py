"""Hand-checkable replays: two assets, one price jump (A doubles, B flat)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from bt_synthetic import jump_history, two_asset_world

from rebalancer.backtest.engine import replay_account
from rebalancer.backtest.metrics import grade_decisions, policy_metrics
from rebalancer.backtest.policies import parse_policy
from rebalancer.backtest.runner import _frames
from rebalancer.domain.model import TaxType
from rebalancer.optimizer import Recommender

JUMP = 2
"""Index of the day A closes at 200 (from 100)."""


def run(spec: str, **kw: object):  # type: ignore[no-untyped-def]
    h = jump_history()
    account, models, instruments = two_asset_world(**kw)  # type: ignore[arg-type]
    days = frozenset(h.dates[JUMP:])
    res = replay_account(
        account, models, instruments, h, parse_policy(spec), Recommender(),
        t_start=0, t_end=len(h.dates) - 1, decision_days=days,
    )  # fmt: skip
    return h, res


def test_never_drift_is_the_hand_value() -> None:
    _, res = run("never")
    drift = [row["drift"] for row in res.daily]
    # after the jump: A = 20000 / 30000 = 2/3 against 1/2, B = 1/3 against 1/2
    assert drift == pytest.approx([0, 0, 1 / 6, 1 / 6, 1 / 6, 1 / 6])
    assert [row["nav"] for row in res.daily][JUMP:] == pytest.approx([30000.0] * 4)
    assert res.trades == [] and res.decisions == []
    # the target portfolio earns half of A's +100 % on the jump day; we were on target
    assert res.daily[1]["target_return_next"] == pytest.approx(0.5)
    assert res.daily[1]["active_return_next"] == pytest.approx(0.0)


def test_band_trades_back_to_target_with_the_known_trade_and_cost() -> None:
    h, res = run("band-abs-5")
    (decision,) = res.decisions
    assert decision["date"] == h.dates[JUMP]
    assert decision["drift_before"] == pytest.approx(1 / 6)
    trades = {t["instrument"]: t for t in res.trades}
    # NAV 30000 -> 15000 per asset: sell 25 A at 200; the proceeds net of 5 bps buy 49 B
    assert (trades["A"]["side"], trades["A"]["quantity"]) == ("sell", 25.0)
    assert (trades["B"]["side"], trades["B"]["quantity"]) == ("buy", 49.0)
    # cost: 5 bps half spread of 5000 + 4900 (impact nil at this ADV)
    cost = sum(t["cost"] for t in res.trades)
    assert cost == pytest.approx(0.0005 * 9900, rel=1e-3)
    assert res.daily[-1]["nav"] == pytest.approx(30000 - cost, abs=0.01)
    assert res.daily[-1]["cash"] == pytest.approx(5000 - 2.5 - 49 * 100.05, abs=0.01)
    assert res.daily[JUMP]["drift"] < 0.005


def test_monthly_fires_on_the_first_trading_day_of_the_month() -> None:
    h, res = run("monthly")
    (decision,) = res.decisions
    assert decision["date"].day == 1 and decision["date"] == h.dates[3]


def test_optimizer_decisions_are_graded_against_the_ungated_optimum() -> None:
    _, res = run("optimizer@100000")
    assert res.decisions and all(d["graded"] for d in res.decisions)
    first = res.decisions[0]
    assert first["decision"] == "rebalance"
    assert first["best_objective"] <= first["objective"] + 1e-9
    frames = _frames([res])
    graded = grade_decisions(frames["decisions"])
    assert graded["optimal"].to_list() == [True] * len(graded)


def test_taxable_gain_is_realized_and_taxed_on_the_sale() -> None:
    _, res = run("band-abs-5", tax_type=TaxType.TAXABLE, a_basis="50")
    gains = [(g["lot_id"], g["quantity"], g["gain"], g["term"]) for g in res.realized]
    (lot_id, qty, gain, term) = gains[0]
    # 25 shares of the lot bought at 50, sold at 200 less 5 bps: gain 25 * (199.9 - 50)
    assert (lot_id, qty, term) == ("a1", 25.0, "long")
    assert gain == pytest.approx(25 * (200 * (1 - 0.0005) - 50), abs=0.01)
    m = policy_metrics(_frames([res]))
    assert m["taxes_paid"][0] == pytest.approx(0.15 * gain, rel=1e-6)


def test_withdrawal_larger_than_cash_sells_first() -> None:
    h = jump_history(jump_day=99)
    account, models, instruments = two_asset_world()
    res = replay_account(
        account, models, instruments, h, parse_policy("never"), Recommender(),
        t_start=0, t_end=len(h.dates) - 1, flows={h.dates[1]: -3000.0},
    )  # fmt: skip
    sold = sum(t["value"] for t in res.trades if t["side"] == "sell")
    assert all(t["kind"] == "liquidity" for t in res.trades)
    assert sold >= 3000.0
    assert res.daily[1]["nav"] == pytest.approx(20000 - 3000 - sum(t["cost"] for t in res.trades))
    assert res.daily[1]["cash"] >= 0.0


def test_deposit_is_credited_to_cash() -> None:
    h = jump_history(jump_day=99)
    account, models, instruments = two_asset_world()
    res = replay_account(
        account, models, instruments, h, parse_policy("never"), Recommender(),
        t_start=0, t_end=len(h.dates) - 1, flows={h.dates[2]: 1000.0},
    )  # fmt: skip
    assert res.daily[2]["cash"] == pytest.approx(1000.0)
    assert res.daily[2]["flow"] == 1000.0
    m = policy_metrics(_frames([res]))
    # flat prices: the deposit is not return
    assert m["pretax_return"][0] == pytest.approx(0.0, abs=1e-12)
    assert Decimal(str(res.daily[-1]["nav"])) == Decimal("21000.0")


def test_a_withdrawal_never_leaves_negative_cash_by_rounding() -> None:
    h = jump_history(jump_day=99)
    account, models, instruments = two_asset_world(cash="10.015")
    res = replay_account(
        account, models, instruments, h, parse_policy("never"), Recommender(),
        t_start=0, t_end=len(h.dates) - 1, flows={h.dates[1]: -10.015},
    )  # fmt: skip
    assert res.daily[1]["cash"] == pytest.approx(0.005)
    assert all(row["cash"] >= 0 for row in res.daily)
