"""Sleeves netted inside one account: opposite wishes re-attribute instead of trading."""

from __future__ import annotations

from typing import Any

import pytest
from hh_factory import AS_OF, diag_cov, inst, lot

from rebalancer.domain.errors import InvalidInput
from rebalancer.optimizer.enums import Decision, Side
from rebalancer.optimizer.household.sleeves import SleeveRequest, analyze_sleeves


def _request(mode: str = "unified", **kw: Any) -> SleeveRequest:
    # Account: 500 X and 500 Y at 100, no cash. Sleeve A (half) follows 100 % X and holds
    # 300 X + 200 Y; sleeve B (half) follows 100 % Y and holds 200 X + 300 Y. Alone, A would
    # sell 200 Y and buy 200 X while B sells 200 X and buys 200 Y: they cancel exactly.
    insts = [inst("X", 100.0), inst("Y", 100.0)]
    account = {
        "as_of": AS_OF.isoformat(),
        "portfolio": {
            "cash": 0.0,
            "lots": [lot("x1", "X", 500, 90.0), lot("y1", "Y", 500, 90.0)],
        },
        "targets": {"X": 0.5, "Y": 0.5},
        "instruments": insts,
        "risk_model": diag_cov(["X", "Y"]),
        "policy": {"risk_aversion": 100.0},
    }
    sleeves = [
        {"id": "A", "share": 0.5, "targets": {"X": 1.0}, "holdings": {"X": 300, "Y": 200}},
        {"id": "B", "share": 0.5, "targets": {"Y": 1.0}, "holdings": {"X": 200, "Y": 300}},
    ]
    return SleeveRequest.model_validate(
        {"account": account, "sleeves": sleeves, "mode": mode, **kw}
    )


def test_opposite_sleeve_trades_give_no_trade_only_reattribution() -> None:
    r = analyze_sleeves(_request())
    assert r.decision == Decision.NO_TRADE and r.analysis.trades == []
    moved = {(m.instrument, m.from_sleeve, m.to_sleeve): m.quantity for m in r.reattributions}
    assert moved == pytest.approx({("X", "B", "A"): 200.0, ("Y", "A", "B"): 200.0})
    by_id = {s.id: s for s in r.sleeves}
    assert by_id["A"].holdings_after == pytest.approx({"X": 500.0})
    assert by_id["B"].holdings_after == pytest.approx({"Y": 500.0})
    for s in r.sleeves:
        assert s.drift_before == pytest.approx(0.2)
        assert s.drift_after == pytest.approx(0.0, abs=1e-12)
        assert s.drift_removed_share == pytest.approx(0.5)
        assert s.traded_value == 0.0 and s.cost_currency == 0.0 and s.tax_currency == 0.0
        assert s.cash_after == pytest.approx(0.0, abs=1e-9)  # swaps at market price
        assert s.value_transfer == pytest.approx(0.0, abs=1e-9)
    assert r.trades_avoided_value == pytest.approx(80_000.0)


def test_strategy_mode_trades_the_one_sleeve() -> None:
    r = analyze_sleeves(_request("strategy", sleeve_id="A"))
    sides = {(t.instrument, t.side): t.quantity for t in r.analysis.trades}
    assert sides[("X", Side.BUY)] > 150 and sides[("Y", Side.SELL)] > 150
    by_id = {s.id: s for s in r.sleeves}
    assert by_id["B"].holdings_after == {"X": 200.0, "Y": 300.0}  # frozen
    assert by_id["A"].drift_removed_share == 1.0
    assert by_id["A"].cost_currency > 0 and by_id["A"].tax_currency > 0  # Y sold at a gain
    assert r.reattributions == []


def test_holdings_must_add_up() -> None:
    req = _request().model_copy(deep=True)
    bad = req.model_dump()
    bad["sleeves"][0]["holdings"]["X"] = 301
    with pytest.raises(InvalidInput) as err:
        analyze_sleeves(SleeveRequest.model_validate(bad))
    assert err.value.fields == ["sleeves"]


def test_a_lot_of_an_unknown_instrument_is_refused_naming_the_account_field() -> None:
    """The account part is checked like a single-account request (found by the API fuzzer:
    a lot of an instrument missing from ``instruments`` was a 500)."""
    bad = _request().model_dump()
    bad["account"]["portfolio"]["lots"].append(lot("v1", "V", 10, 50.0))
    with pytest.raises(InvalidInput) as err:
        analyze_sleeves(SleeveRequest.model_validate(bad))
    assert err.value.fields and all(f.startswith("account.") for f in err.value.fields)
    assert "V" in err.value.detail
