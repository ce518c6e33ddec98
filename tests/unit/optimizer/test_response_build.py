"""The response's figures computed from arrays equal the plain definitions over its own rows."""

from __future__ import annotations

from datetime import timedelta

from opt_factory import AS_OF, diag_cov, inst, lot, request

from rebalancer.optimizer import Decision, Recommender, Term
from rebalancer.optimizer.data import build_data
from rebalancer.optimizer.samples import random_account
from rebalancer.optimizer.schemas import AnalyzeRequest
from rebalancer.optimizer.validation import check_request

REC = Recommender()


def test_tax_summary_is_the_sum_of_the_lot_sales_in_order() -> None:
    seen_terms: set[Term] = set()
    for seed in range(4):
        body = random_account(seed, n=12, lots_per=3, k=3)
        for j, lt in enumerate(body["portfolio"]["lots"]):  # a mix of short and long terms
            if j % 3 == 0:
                lt["acquired"] = (AS_OF - timedelta(days=100)).isoformat()
        out = REC.analyze(AnalyzeRequest.model_validate(body))
        sales = [s for t in out.trades for s in t.lots]  # sells in instrument, lot order
        seen_terms |= {s.term for s in sales}
        # exactly the left-to-right sums over the sales
        short = [s.realized_gain for s in sales if s.term is Term.SHORT]
        long_ = [s.realized_gain for s in sales if s.term is Term.LONG]
        assert out.tax.short_term_gain == sum(short)
        assert out.tax.long_term_gain == sum(long_)
        losses = [s.realized_gain for s in sales if s.realized_gain < 0]
        assert out.tax.harvested_losses == sum(losses)
        assert out.tax.estimated_tax == sum(s.tax_currency for s in sales)
    assert seen_terms == {Term.SHORT, Term.LONG}


def test_no_trade_by_min_net_benefit_reports_the_checks_of_not_trading() -> None:
    req = request(
        cash=0.0,
        lots=[lot("a1", "A", 60, 100.0), lot("a2", "A", 40, 100.0)],
        targets={"A": 0.5, "B": 0.5},
        instruments=[inst("A"), inst("B")],
        risk_model=diag_cov(["A", "B"]),
        policy={"min_net_benefit": 1e12, "max_turnover": 2.0},
    )
    out = REC.analyze(req)
    assert out.decision is Decision.NO_TRADE
    assert out.trades == []
    turnover = [c for c in out.constraints if c.name.value == "turnover"]
    assert len(turnover) == 1 and turnover[0].value == 0.0  # the zero trade's check


def test_lot_id_grid_pads_with_none_and_names_lots_row_major() -> None:
    req = request(
        cash=1000.0,
        lots=[
            lot("b1", "B", 5, 90.0),
            lot("a1", "A", 10, 90.0),
            lot("b2", "B", 5, 110.0),
            lot("b3", "B", 5, 120.0),
        ],
        targets={"A": 0.5, "B": 0.5},
        instruments=[inst("A"), inst("B"), inst("C")],
    )
    data = build_data(req, check_request(req))
    assert data.lot_ids == [["a1", None, None], ["b1", "b2", "b3"], [None, None, None]]
    assert data.lot_names == ["a1", "b1", "b2", "b3"]
    assert data.lot_present.tolist() == [[x is not None for x in row] for row in data.lot_ids]


def test_lot_id_grid_of_an_account_without_lots() -> None:
    req = request(cash=1000.0, lots=[], targets={"A": 0.5, "CASH": 0.5}, instruments=[inst("A")])
    data = build_data(req, check_request(req))
    assert data.lot_ids == [[None]]
    assert data.lot_names == []


def test_an_instrument_sold_out_ends_at_exactly_zero_weight() -> None:
    """Selling every share held leaves weight 0, not the -1e-17 that summing the same shares
    lot by lot leaves (an explanation would read "-0.00 %")."""
    from opt_factory import random_request

    from rebalancer.optimizer import FAST_CHAIN

    emptied = 0
    for chain in (FAST_CHAIN, None):
        rec = REC if chain is None else Recommender(solvers=chain)
        for seed in range(3):
            req = random_request(seed, min_cash_weight=0.99)  # raise cash: most sell out
            held = {}
            for lt in req.portfolio.lots:
                held[lt.instrument] = held.get(lt.instrument, 0.0) + lt.quantity
            out = rec.analyze(req)
            bought = {t.instrument for t in out.trades if t.side.value == "buy"}
            for t in out.trades:
                assert "-0.00%" not in t.explanation
                sold_out = t.side.value == "sell" and t.quantity == held[t.instrument]
                if sold_out and t.instrument not in bought:
                    assert t.weight_after == 0.0
                    assert out.drift_after.by_instrument[t.instrument] == -t.target
                    emptied += 1
            (long_only,) = [c for c in out.constraints if c.name.value == "long_only"]
            assert long_only.slack >= 0.0, long_only
    assert emptied > 0
