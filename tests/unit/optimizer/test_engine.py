"""End-to-end cases of analyze(): decisions, constraints, tax, wash sale, fallback, errors."""

from __future__ import annotations

from datetime import timedelta

import pytest
from opt_factory import AS_OF, diag_cov, inst, lot, request

from rebalancer.domain.errors import InfeasibleRebalance, InvalidInput
from rebalancer.optimizer import (
    Decision,
    Reason,
    Recommender,
    Side,
    SolverName,
    SolveStatus,
    Term,
    analyze,
)
from rebalancer.optimizer import problem as problem_mod

REC = Recommender()


def _two(policy=None, cash=0.0, a_basis=50.0, targets=None, **kw):
    """A holds 100 x 100 (all of NAV); target half A, half B."""
    return request(
        cash=cash,
        lots=[lot("a1", "A", 60, a_basis), lot("a2", "A", 40, 90.0)],
        targets=targets or {"A": 0.5, "B": 0.5},
        instruments=[inst("A", **kw), inst("B", **kw)],
        policy=policy or {"short_term_rate": 0.0, "long_term_rate": 0.0},
    )


def test_simple_rebalance_sells_a_buys_b_with_lot_ids() -> None:
    out = REC.analyze(_two())
    assert out.decision is Decision.REBALANCE
    sides = {t.instrument: t for t in out.trades}
    assert sides["A"].side is Side.SELL and sides["B"].side is Side.BUY
    assert 45 <= sides["A"].quantity <= 50 and 45 <= sides["B"].quantity <= 50
    assert {lt.lot_id for lt in sides["A"].lots} <= {"a1", "a2"}
    assert sum(lt.quantity for lt in sides["A"].lots) == sides["A"].quantity
    assert Reason.DRIFT_REMOVED in sides["B"].reasons
    assert out.net_benefit > 0
    assert out.drift_after.account < out.drift_before.account
    assert all(c.slack >= -1e-9 for c in out.constraints)
    assert out.solver.name is SolverName.CLARABEL and out.solver.status is SolveStatus.OPTIMAL


def test_optimizer_chooses_the_high_basis_lot_when_taxed() -> None:
    out = REC.analyze(_two(policy={"short_term_rate": 0.4, "long_term_rate": 0.2}))
    sell = next(t for t in out.trades if t.side is Side.SELL)
    # a2 (basis 90) costs far less tax than a1 (basis 50): it is used first
    by_lot = {lt.lot_id: lt.quantity for lt in sell.lots}
    assert by_lot.get("a2", 0) > 0 and by_lot.get("a1", 0) == 0
    assert all(lt.term is Term.LONG for lt in sell.lots)
    assert out.tax.estimated_tax == pytest.approx(sum(lt.tax_currency for lt in sell.lots))


def test_lot_size_rounding_and_min_trade_value() -> None:
    out = REC.analyze(_two(lot_size=20))
    for t in out.trades:
        assert t.quantity % 20 == 0
    out = REC.analyze(_two(policy={"min_trade_value": 1e9}))
    assert out.decision is Decision.NO_TRADE and out.trades == []


def test_zero_drift_gives_no_trade() -> None:
    out = REC.analyze(_two(targets={"A": 1.0}))
    assert out.decision is Decision.NO_TRADE
    assert out.trades == [] and out.net_benefit == pytest.approx(0.0)


def test_min_net_benefit_turns_into_no_trade() -> None:
    out = REC.analyze(_two(policy={"min_net_benefit": 1e9}))
    assert out.decision is Decision.NO_TRADE
    assert any("min_net_benefit" in m for m in out.messages)


@pytest.mark.parametrize(
    ("policy", "check"),
    [
        ({"max_turnover": 0.2}, lambda o: sum(t.value for t in o.trades) <= 0.2 * o.nav + 1e-6),
        ({"min_cash_weight": 0.3}, lambda o: o.cash_after >= 0.3 * o.nav - 1e-6),
        ({"no_buy": ["B"]}, lambda o: all(t.side is Side.SELL for t in o.trades)),
        ({"no_sell": ["A"]}, lambda o: o.trades == []),
    ],
)
def test_policy_limits_hold(policy, check) -> None:
    out = REC.analyze(_two(policy={"short_term_rate": 0.0, "long_term_rate": 0.0, **policy}))
    assert check(out)


def test_adv_cap_limits_each_trade() -> None:
    out = REC.analyze(_two(adv_shares=200))  # 0.1 * 200 shares = 20 shares per instrument
    assert all(t.quantity <= 20 for t in out.trades)
    adv = [c for c in out.constraints if c.name.value == "adv_cap"]
    assert adv and adv[0].slack >= -1e-9


def test_raise_cash_emergency_sells_cheapest_and_does_not_buy() -> None:
    req = _two(policy={"raise_cash": 3000, "short_term_rate": 0.4, "long_term_rate": 0.2})
    out = REC.analyze(req)
    assert out.cash_after >= 3000 - 1e-6
    assert all(t.side is Side.SELL for t in out.trades)
    assert any(Reason.CASH_RAISED in t.reasons for t in out.trades)


def _wash(recent_days: int, substitutes: bool):
    return request(
        cash=1000,
        lots=[lot("x1", "X", 100, 150.0)],  # price 100: loss of 50/share
        targets={"X": 0.9, "CASH": 0.1},
        instruments=[
            inst("X", substitutes=["Y"] if substitutes else []),
            inst("Y"),
        ],
        risk_model={
            "instruments": ["X", "Y"],
            "covariance": [[0.04, 0.0396], [0.0396, 0.04]],
        },
        recent_buys=[
            {
                "instrument": "X",
                "date": (AS_OF - timedelta(days=recent_days)).isoformat(),
                "quantity": 5,
            }
        ],
        policy={"short_term_rate": 0.4, "long_term_rate": 0.2},
    )


def test_wash_sale_loss_sale_refused_after_recent_buy() -> None:
    out = REC.analyze(_wash(10, substitutes=True))
    assert "x1" in out.tax.blocked_by_wash_sale
    assert not any(lt.lot_id == "x1" for t in out.trades for lt in t.lots)


def test_harvest_with_substitute_is_allowed() -> None:
    out = REC.analyze(_wash(45, substitutes=True))  # buy 45 days ago: outside the window
    sides = {(t.instrument, t.side) for t in out.trades}
    assert ("X", Side.SELL) in sides and ("Y", Side.BUY) in sides
    buy_y = next(t for t in out.trades if t.instrument == "Y")
    assert Reason.SUBSTITUTE in buy_y.reasons
    sell_x = next(t for t in out.trades if t.instrument == "X")
    assert Reason.LOSS_HARVESTED in sell_x.reasons and sell_x.tax_currency < 0
    assert out.tax.harvested_losses < 0


def test_never_sell_at_a_loss_and_buy_the_same_group() -> None:
    req = request(
        cash=0,
        lots=[lot("x1", "X", 100, 150.0)],
        targets={"X": 0.6, "Z": 0.4},
        instruments=[inst("X", wash_sale_group="g"), inst("Z", wash_sale_group="g")],
        risk_model={"instruments": ["X", "Z"], "covariance": [[0.04, 0.03], [0.03, 0.04]]},
        policy={"short_term_rate": 0.4, "long_term_rate": 0.2},
    )
    out = REC.analyze(req)
    sold_loss = any(lt.realized_gain < 0 for t in out.trades for lt in t.lots)
    bought = any(t.side is Side.BUY for t in out.trades)
    assert not (sold_loss and bought)
    assert out.solver.solves >= 2


def test_lot_turning_long_term_soon_is_deferred() -> None:
    req = request(
        cash=0,
        lots=[lot("s1", "A", 100, 20.0, days_ago=360), lot("l1", "A", 100, 20.0, days_ago=800)],
        targets={"A": 0.5, "B": 0.5},
        instruments=[inst("A"), inst("B")],
        policy={"short_term_rate": 0.4, "long_term_rate": 0.15, "lt_wait_days": 30},
    )
    out = REC.analyze(req)
    assert [d.lot_id for d in out.tax.deferred_lots] == ["s1"]
    assert out.tax.deferred_lots[0].days == 6
    assert not any(lt.lot_id == "s1" for t in out.trades for lt in t.lots)


def test_risk_limits_var_te_stress_sector_hold() -> None:
    policy = {
        "short_term_rate": 0.0,
        "long_term_rate": 0.0,
        "risk_aversion": 0.0,
        "max_var": 0.2,
        "max_tracking_error": 0.15,
        "stress_scenarios": [{"name": "crash", "returns": {"A": -0.4}, "max_loss": 0.3}],
        "max_sector_risk_share": {"tech": 0.8},
    }
    req = request(
        cash=0,
        lots=[lot("a1", "A", 100, 90.0)],
        targets={"A": 0.5, "B": 0.5},
        instruments=[inst("A", sector="tech"), inst("B", sector="energy")],
        risk_model=diag_cov(["A", "B"], 0.04),
        policy=policy,
    )
    out = REC.analyze(req)
    r = out.risk
    assert r.var_after <= 0.2 + 1e-9 and r.var_before > 0.2
    assert r.tracking_error_after <= 0.15 + 1e-9
    assert r.stress[0].loss_after <= 0.3 + 1e-9
    assert r.contributions_by_sector["tech"].share <= 0.8 + 1e-6
    names = {c.name.value for c in out.constraints}
    assert {"var", "tracking_error", "stress", "sector_risk_share"} <= names
    assert any(Reason.RISK_REDUCED in t.reasons for t in out.trades)


def test_infeasible_cash_floor_names_both_limits_with_numbers() -> None:
    req = _two(policy={"min_cash_weight": 0.3, "max_turnover": 0.1})
    with pytest.raises(InfeasibleRebalance) as err:
        REC.analyze(req)
    assert set(err.value.fields) == {"policy.min_cash_weight", "policy.max_turnover"}
    assert "3,000" in err.value.detail and "1,000" in err.value.detail


def test_infeasible_cash_floor_above_what_selling_everything_raises() -> None:
    req = _two(policy={"min_cash_weight": 0.5, "no_sell": ["A"]})
    with pytest.raises(InfeasibleRebalance) as err:
        REC.analyze(req)
    assert "policy.min_cash_weight" in err.value.fields
    assert "policy.no_sell" in err.value.fields


def test_invalid_targets_and_risk_model_name_fields() -> None:
    with pytest.raises(InvalidInput) as err:
        REC.analyze(_two(targets={"A": 0.5, "B": 0.6}))
    assert err.value.fields == ["targets"]
    with pytest.raises(InvalidInput) as err:
        REC.analyze(_two(targets={"A": 0.5, "Q": 0.5}))
    assert err.value.fields == ["targets.Q"]
    bad = _two().model_copy(
        update={"risk_model": _two().risk_model.model_copy(update={"instruments": ["A", "C"]})}
    )
    with pytest.raises(InvalidInput) as err:
        REC.analyze(bad)
    assert err.value.fields == ["risk_model.instruments"]


def test_factor_shapes_checked() -> None:
    base = _two()
    from rebalancer.optimizer.schemas import FactorRiskModel

    rm = FactorRiskModel(
        instruments=["A", "B"],
        factor_exposures=[[1.0, 0.0], [0.0, 1.0]],
        factor_covariance=[[0.04]],
        specific_variance=[0.01, 0.01],
    )
    with pytest.raises(InvalidInput) as err:
        REC.analyze(base.model_copy(update={"risk_model": rm}))
    assert "risk_model.factor_covariance" in err.value.fields


def test_fallback_chain_is_recorded(monkeypatch) -> None:
    monkeypatch.setitem(problem_mod._SOLVER_ARGS, SolverName.CLARABEL, {"solver": "NO_SUCH"})
    out = Recommender().analyze(_two())
    assert out.solver.name is SolverName.SCS
    assert out.solver.fallbacks[0].solver is SolverName.CLARABEL
    assert out.decision is Decision.REBALANCE


def test_heuristic_when_no_solver_answers() -> None:
    out = Recommender(solvers=(SolverName.HEURISTIC,)).analyze(_two())
    assert out.solver.name is SolverName.HEURISTIC
    assert out.decision is Decision.REBALANCE
    assert all(c.slack >= -1e-9 for c in out.constraints)


def test_compiled_problem_reused_across_accounts() -> None:
    rec = Recommender()
    first = rec.analyze(_two())
    second = rec.analyze(_two(cash=500.0))
    assert not first.solver.compiled_cache_hit and second.solver.compiled_cache_hit
    assert analyze(_two()).decision is Decision.REBALANCE


def test_compiled_shapes_are_frozen_out_of_the_gc_only_while_the_cache_has_room() -> None:
    """A frozen problem evicted later would never be collected (reference cycles), so the
    engine stops freezing once its cache of shapes churns: at most ``cache_size`` frozen."""
    import gc

    from rebalancer.optimizer.data import Shape

    rec = Recommender(cache_size=2)
    first, _ = rec.problem_for(Shape(3, 1, 1, 0, 0))
    second, _ = rec.problem_for(Shape(4, 1, 1, 0, 0))
    assert first.freeze_gc and second.freeze_gc  # room for both
    third, _ = rec.problem_for(Shape(5, 1, 1, 0, 0))  # full: evicts the first
    frozen = gc.get_freeze_count()
    fourth, _ = rec.problem_for(Shape(6, 1, 1, 0, 0))
    assert not third.freeze_gc and not fourth.freeze_gc
    assert gc.get_freeze_count() == frozen
    again, hit = rec.problem_for(Shape(6, 1, 1, 0, 0))
    assert again is fourth and not hit  # cached, not compiled by a solve yet
