"""Tests of the sample book."""

from __future__ import annotations

from collections import Counter

import pytest

from rebalancer.domain.model import CASH, blended_targets, validate_targets
from rebalancer.sample_book import SampleBook, build_sample_book


@pytest.fixture(scope="module")
def book() -> SampleBook:
    return build_sample_book()


def test_instruments(book: SampleBook) -> None:
    assert 10 <= len(book.instruments) <= 30
    inst = book.instruments
    assert inst["AGG"].wash_sale_group == inst["BND"].wash_sale_group == "us_agg_bond"
    assert inst["AGG"].asset_class == inst["SHY"].asset_class == "fixed_income"
    assert "PEP" in inst["KO"].substitutes and "KO" in inst["PEP"].substitutes
    assert "CVX" in inst["XOM"].substitutes
    assert inst["KO"].group != inst["PEP"].group  # substitutes are not substantially identical
    for i in inst.values():
        assert i.lot_size == 1 and i.settlement_days == 1 and i.sector != "unknown"
        assert all(s in inst for s in i.substitutes)
    assert set(book.prices) == set(inst)
    assert all(p > 0 for p in book.prices.values())


def test_models_are_valid_and_use_book_instruments(book: SampleBook) -> None:
    assert set(book.models) == {"growth", "balanced", "income"}
    for model in book.models.values():
        validate_targets(model.weights())
        assert model.cash_target > 0
        assert set(model.targets) <= set(book.instruments)


def test_accounts(book: SampleBook) -> None:
    assert len(book.accounts) == 50
    assert len({a.id for a in book.accounts}) == 50
    sleeves = Counter(len(a.sleeves) for a in book.accounts)
    assert set(sleeves) == {1, 2}
    assert 5 <= sleeves[2] <= 20
    prices = book.float_prices()
    for acct in book.accounts:
        assert acct.tenant_id == "demo"
        assert sum(s.share for s in acct.sleeves) == pytest.approx(1.0, abs=1e-9)
        assert all(s.model_id in book.models for s in acct.sleeves)
        assert acct.cash >= 0
        assert acct.lots
        assert len({lot.lot_id for lot in acct.lots}) == len(acct.lots)
        for lot in acct.lots:
            assert lot.quantity > 0 and lot.quantity == int(lot.quantity)
            assert lot.cost_basis > 0
            assert lot.acquired < book.start_date
        assert sum(acct.weights(prices).values()) == pytest.approx(1.0)


def test_lots_have_gains_losses_short_and_long_term(book: SampleBook) -> None:
    lots = [lot for a in book.accounts for lot in a.lots]
    gains = [lot.unrealized_gain(book.prices[lot.instrument]) for lot in lots]
    assert sum(g > 0 for g in gains) > 50
    assert sum(g < 0 for g in gains) > 50
    long_term = [lot.is_long_term(book.start_date) for lot in lots]
    assert 50 < sum(long_term) < len(lots) - 50
    per_holding = Counter((a.id, lot.instrument) for a in book.accounts for lot in a.lots)
    assert max(per_holding.values()) >= 3


def test_accounts_start_drifted(book: SampleBook) -> None:
    prices = book.float_prices()
    drifted = 0
    for acct in book.accounts:
        targets = blended_targets(acct.sleeves, book.models)
        weights = acct.weights(prices)
        keys = set(targets) | set(weights)
        max_drift = max(abs(weights.get(k, 0.0) - targets.get(k, 0.0)) for k in keys)
        assert max_drift < 0.25  # somewhat, not wildly
        drifted += max_drift > 0.03
        assert CASH in weights
    assert drifted >= 25


def test_households(book: SampleBook) -> None:
    assert book.households
    for hh, members in book.households.items():
        assert len(members) >= 2
        assert all(book.account(a).household_id == hh for a in members)
    in_households = {a for m in book.households.values() for a in m}
    assert all(a.household_id is None for a in book.accounts if a.id not in in_households)


def test_deterministic_by_seed(book: SampleBook) -> None:
    assert build_sample_book(seed=7) == book
    other = build_sample_book(seed=8, n_accounts=10)
    assert len(other.accounts) == 10
    assert other.accounts != book.accounts[:10]


def test_price_feed_continues_from_the_book(book: SampleBook) -> None:
    feed = book.price_feed(seed=1)
    assert feed.current_prices() == book.prices
    md = feed.next_market_data()
    assert md.as_of > book.start_date
    assert {bar.instrument for bar in md.bars} == set(book.instruments)
