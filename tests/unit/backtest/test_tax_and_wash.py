"""Tax netting, tax alpha split, the independent wash-sale check, and the no-wash-sale
property of replays through the optimizer."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from bt_synthetic import trading_days, two_asset_world
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rebalancer.backtest.engine import replay_account
from rebalancer.backtest.market import history_from_arrays
from rebalancer.backtest.policies import parse_policy
from rebalancer.backtest.tax import (
    LossDefinition,
    TaxRates,
    account_taxes,
    net_tax,
    tax_alpha,
    wash_sale_violations,
)
from rebalancer.domain.model import TaxType
from rebalancer.optimizer import Recommender

R = TaxRates()


def test_net_tax_nets_short_and_long_and_carries_losses() -> None:
    assert net_tax(1000.0, 2000.0, 0.0, R) == pytest.approx((350.0 + 300.0, 0.0))
    # a short-term loss offsets long-term gains
    assert net_tax(-500.0, 2000.0, 0.0, R) == pytest.approx((0.15 * 1500.0, 0.0))
    # a long-term loss offsets short-term gains
    assert net_tax(1000.0, -400.0, 0.0, R) == pytest.approx((0.35 * 600.0, 0.0))
    # a net loss is carried forward, then used first against short-term gains
    assert net_tax(-1000.0, 200.0, 0.0, R) == pytest.approx((0.0, 800.0))
    assert net_tax(500.0, 1000.0, 800.0, R) == pytest.approx((0.15 * 700.0, 0.0))


def _realized(rows: list[tuple[str, date, float, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"policy": p, "account": "a", "date": d, "gain": g, "term": t, "taxable": True}
            for p, d, g, t in rows
        ]
    )


def _lots(rows: list[tuple[str, float, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "policy": p, "account": "a", "date": date(2024, 12, 31), "quantity": 1.0,
                "cost_basis": basis, "price": price, "acquired": date(2020, 1, 1),
                "taxable": True,
            }
            for p, basis, price in rows
        ]
    )  # fmt: skip


def test_tax_alpha_splits_a_harvest_into_deferred_and_permanent() -> None:
    # shadow: realizes a 1000 long-term gain in 2024 (withdrawal); harvest: also harvests a
    # 1000 short-term loss, which lowers the basis of what it holds at the end by 1000
    realized = _realized(
        [
            ("never", date(2024, 3, 1), 1000.0, "long"),
            ("harvest", date(2024, 3, 1), 1000.0, "long"),
            ("harvest", date(2024, 4, 1), -1000.0, "short"),
        ]
    )
    lots = _lots([("never", 100.0, 3000.0), ("harvest", 100.0, 4000.0)])
    taxes = account_taxes(realized, lots, R)
    alpha = tax_alpha(taxes, "never", R).filter(pl.col("policy") == "harvest").row(0, named=True)
    assert alpha["gross_tax_saving"] == pytest.approx(150.0)  # 1000 LT gain no longer taxed
    assert alpha["deferred"] == pytest.approx(150.0)  # 1000 more LT gain at the end
    assert alpha["permanent_saving"] == pytest.approx(0.0)
    assert alpha["deferral_value"] == pytest.approx(150.0 * (1 - 1.04**-10))
    harvested = taxes.filter(pl.col("policy") == "harvest")["losses_harvested"][0]
    assert harvested == pytest.approx(1000.0)


def _trades(rows: list[tuple[str, date, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"policy": "p", "account": "a", "date": d, "fill_id": f, "group": "G", "side": s,
             "quantity": 10.0}
            for f, d, s in rows
        ]
    )  # fmt: skip


def _losses(rows: list[tuple[str, date, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"policy": "p", "account": "a", "date": d, "lot_id": lot, "group": "G", "gain": g,
             "quantity": 10.0, "taxable": True}
            for lot, d, g in rows
        ]
    )  # fmt: skip


def test_wash_sale_check_finds_buys_within_30_days_either_side() -> None:
    trades = _trades([("b1", date(2024, 1, 2), "buy"), ("b2", date(2024, 3, 20), "buy")])
    losses = _losses([("old", date(2024, 1, 20), -50.0), ("old2", date(2024, 2, 25), -5.0)])
    v = wash_sale_violations(trades, losses)
    pairs = sorted(zip(v["lot_id"].to_list(), v["buy_fill"].to_list(), strict=True))
    # b1 is 18 days before the first loss; b2 is 24 days after the second; b2 vs the first
    # loss (60 days) and b1 vs the second (54 days) are outside the window
    assert pairs == [("old", "b1"), ("old2", "b2")]
    # gains are never wash sales, and a lot sold whole does not wash its own loss
    assert wash_sale_violations(trades, _losses([("x", date(2024, 1, 3), 10.0)])).is_empty()
    assert wash_sale_violations(trades, _losses([("b1", date(2024, 1, 9), -1.0)])).is_empty()


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(
    moves=st.lists(st.floats(-0.12, 0.12), min_size=14, max_size=14),
    spec=st.sampled_from(["optimizer", "band-abs-5", "monthly"]),
)
def test_replays_never_wash_a_loss(moves: list[float], spec: str) -> None:
    """Property: with no trading costs (a loss before costs is a loss after), a taxable
    account replayed through the optimizer never buys within 30 days of a loss sale."""
    days = trading_days(len(moves) + 1, start=date(2024, 1, 29))
    a = [100.0]
    for m in moves:
        a.append(round(a[-1] * (1 + m), 2))
    b = [round(100.0 * (1 - 0.5 * (x / 100.0 - 1.0)), 2) for x in a]
    h = history_from_arrays(days, {"A": a, "B": b}, adv_shares=1e13, half_spread_bps=0.0)
    account, models, instruments = two_asset_world(TaxType.TAXABLE, cash="0", a_basis="120")
    res = replay_account(
        account, models, instruments, h, parse_policy(spec), Recommender(),
        t_start=0, t_end=len(days) - 1, decision_days=frozenset(days),
    )  # fmt: skip
    if res.trades and res.realized:
        realized = pl.DataFrame(res.realized)
        assert wash_sale_violations(pl.DataFrame(res.trades), realized).is_empty()


def test_the_harvesting_replay_sells_losses_and_never_washes_them() -> None:
    """Non-vacuous example of the property: the optimizer harvests A's loss lot (bought at
    120) and does not buy A back within 30 days."""
    moves = [0.02, -0.05, 0.04, -0.08, 0.03, 0.06, -0.02, -0.04, 0.05, 0.01]
    test_replays_never_wash_a_loss.hypothesis.inner_test(  # type: ignore[attr-defined]
        moves + [0.0] * 4, "optimizer"
    )
    days = trading_days(15, start=date(2024, 1, 29))
    a = [100.0]
    for m in moves + [0.0] * 4:
        a.append(round(a[-1] * (1 + m), 2))
    h = history_from_arrays(days, {"A": a, "B": [100.0] * 15}, adv_shares=1e13, half_spread_bps=0)
    account, models, instruments = two_asset_world(TaxType.TAXABLE, cash="0", a_basis="120")
    res = replay_account(
        account, models, instruments, h, parse_policy("optimizer"), Recommender(),
        t_start=0, t_end=14, decision_days=frozenset(days),
    )  # fmt: skip
    losses = [r for r in res.realized if r["gain"] < 0]
    assert losses, "the loss lot is harvested"
    first = min(r["date"] for r in losses)
    assert not [t for t in res.trades if t["instrument"] == "A" and t["side"] == "buy"
                and t["date"] >= first]  # fmt: skip
    assert wash_sale_violations(pl.DataFrame(res.trades), pl.DataFrame(res.realized)).is_empty()


def test_parse_policy_accepts_the_documented_forms_and_rejects_others() -> None:
    assert parse_policy("band-abs-5").band_width == pytest.approx(0.05)
    assert parse_policy("optimizer@250").optimizer_policy.risk_aversion == 250.0
    assert parse_policy("monthly").kind == "calendar"
    for bad in ("band-abs-0", "weekly", "optimizer@x"):
        with pytest.raises(ValueError):
            parse_policy(bad)


def test_the_wash_sale_loss_is_the_rules_not_the_impact_tipped_gain() -> None:
    """A lot sold 10 cents under its basis after all costs, but above it net of the spread and
    commission (the rule's selling costs), is a loss only for the stricter count."""
    trades = _trades([("b1", date(2024, 1, 2), "buy")])
    realized = _losses([("rule", date(2024, 1, 10), -5.0), ("impact", date(2024, 1, 10), -0.1)])
    realized = realized.with_columns(
        pl.Series("wash_sale_loss", [True, False]),
    )
    rule = wash_sale_violations(trades, realized)
    strict = wash_sale_violations(trades, realized, loss=LossDefinition.AFTER_ALL_COSTS)
    assert rule["lot_id"].to_list() == ["rule"]
    assert sorted(strict["lot_id"].to_list()) == ["impact", "rule"]


def test_the_engine_flags_rule_losses_with_the_domain_definition() -> None:
    """Sell A at 100 with 5 bps half spread: a lot with basis 99.96 is a loss by the rule
    (100 x (1 - 0.0005) = 99.95 < 99.96), one at 99.94 is not."""
    from bt_synthetic import jump_history

    h = jump_history(n=4, jump_day=99)
    for basis, expected in (("99.96", True), ("99.94", False)):
        account, models, instruments = two_asset_world(TaxType.TAXABLE, a_basis=basis)
        res = replay_account(
            account, models, instruments, h, parse_policy("never"), Recommender(),
            t_start=0, t_end=3, flows={h.dates[1]: -3000.0},
        )  # fmt: skip
        sold_a = [r for r in res.realized if r["instrument"] == "A"]
        assert sold_a, "the withdrawal sells A's lot (the higher basis)"
        assert {r["wash_sale_loss"] for r in sold_a} == {expected}
        # impact is nil at this ADV: the realized gain after costs has the rule's sign
        assert all((r["gain"] < 0) == expected for r in sold_a)


def test_a_loss_sale_blocks_buying_its_group_in_the_next_requests() -> None:
    """As the service does: after A is sold at a loss (withdrawal), the engine's next request
    forbids buying A (``policy.no_buy``) for the wash-sale window."""
    from bt_synthetic import jump_history

    from rebalancer.backtest.engine import AccountReplay
    from rebalancer.service_layer.handlers.recommending import default_policy

    h = jump_history(n=4, jump_day=99)
    account, models, instruments = two_asset_world(TaxType.TAXABLE, a_basis="120")
    r = AccountReplay(
        account, models, instruments, h, parse_policy("never"), Recommender(),
        {h.dates[1]: -3000.0}, frozenset(),
    )  # fmt: skip
    r.step(0, None)
    r.step(1, h.dates[0])
    assert any(x["instrument"] == "A" and x["gain"] < 0 for x in r.out.realized)
    req, resp = r.ask(2, default_policy())
    assert "A" in req.policy.no_buy
    assert not [t for t in resp.trades if t.instrument == "A" and str(t.side) == "buy"]
