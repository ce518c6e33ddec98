"""The book as matrices: weights from holdings, one book_drift, and the vectorised band screen
agree with the per-account path (account_drift + evaluate_bands)."""

from __future__ import annotations

import math
from datetime import date
from decimal import Decimal

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rebalancer.domain.book import (
    build_layout,
    evaluate_book_drift,
    layout_of_accounts,
    level_groups,
    screen_bands,
    value_paths,
    weights_matrix,
)
from rebalancer.domain.drift import account_drift
from rebalancer.domain.model import CASH, Account, Instrument, Sleeve, TaxLot
from rebalancer.domain.triggers import Band, evaluate_bands

INSTRUMENTS = {
    "A": Instrument("A", sector="tech"),
    "B": Instrument("B", sector="tech"),
    "C": Instrument("C", asset_class="fixed_income", sector="bonds"),
}
TARGETS = {"A": 0.3, "B": 0.3, "C": 0.3, CASH: 0.1}
PRICES = {"A": 10.0, "B": 10.0, "C": 10.0}


def _account(aid: str, qa: int, qb: int, qc: int, cash: str) -> Account:
    lots = [
        TaxLot(f"{aid}-{k}", k, Decimal(q), Decimal(1), date(2024, 1, 2))
        for k, q in (("A", qa), ("B", qb), ("C", qc))
        if q > 0
    ]
    return Account(aid, "t", Decimal(cash), lots, [Sleeve(f"{aid}-s", "m", 1.0)])


def test_hand_calculated_book() -> None:
    acc = _account("x", 40, 30, 20, "100")  # NAV 1000: A .4, B .3, C .2, cash .1
    layout = layout_of_accounts([acc], [TARGETS])
    assert layout.columns == ("A", "B", "C", CASH)
    prices = np.array([PRICES[c] for c in layout.columns[:-1]] + [0.0])
    book, W, nav = evaluate_book_drift(layout, prices, INSTRUMENTS)
    assert nav.tolist() == [1000.0]
    assert np.allclose(W[0], [0.4, 0.3, 0.2, 0.1])
    assert np.allclose(book.active[0], [0.1, 0.0, -0.1, 0.0])
    assert math.isclose(book.sum_abs[0], 0.2) and math.isclose(book.turnover[0], 0.1)
    sector = book.levels["sector"]
    assert sector.groups == ("bonds", "cash", "tech")
    assert np.allclose(sector.active[0], [-0.1, 0.0, 0.1])
    asset = book.levels["asset_class"]
    assert asset.groups == ("cash", "equity", "fixed_income")
    assert np.allclose(asset.active[0], [0.0, 0.1, -0.1])


def test_nav_zero_is_all_cash() -> None:
    layout = build_layout(["z"], [{}], [0.0], [TARGETS])
    W, nav = weights_matrix(layout, np.array([10.0, 10.0, 10.0, 0.0]))
    assert nav.tolist() == [0.0] and W[0].tolist() == [0.0, 0.0, 0.0, 1.0]


def test_value_paths() -> None:
    layout = build_layout(["p"], [{"A": 2.0, "C": 1.0}], [5.0], [TARGETS])
    closes = np.array([[10.0, 20.0, 30.0, 0.0], [11.0, 20.0, 33.0, 0.0]])
    assert value_paths(closes, layout)[:, 0].tolist() == [55.0, 60.0]


BANDS = [
    Band("instrument", absolute=0.05),
    Band("instrument", relative=0.2, min_target=0.05),
    Band("sector", absolute=0.08),
    Band("asset_class", absolute=0.07, key="fixed_income"),
    Band("account", absolute=0.06, metric="turnover"),
    Band("account", absolute=0.1, metric="max_abs"),
]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 200), st.integers(0, 200), st.integers(0, 200), st.integers(0, 3000)
        ),
        min_size=1,
        max_size=8,
    )
)
def test_book_and_screen_agree_with_per_account_path(rows: list[tuple[int, int, int, int]]) -> None:
    accounts = [_account(f"a{i}", a, b, c, str(cash)) for i, (a, b, c, cash) in enumerate(rows)]
    layout = layout_of_accounts(accounts, [TARGETS] * len(accounts))
    prices = np.array([PRICES[c] for c in layout.columns[:-1]] + [0.0])
    groups = level_groups(layout.columns, INSTRUMENTS)
    book, _, _ = evaluate_book_drift(layout, prices, INSTRUMENTS)
    screen = screen_bands(book, layout.targets, BANDS, groups)
    for i, acc in enumerate(accounts):
        report = account_drift(acc.id, acc.weights(PRICES), TARGETS, INSTRUMENTS)
        assert math.isclose(book.sum_abs[i], report.account.sum_abs, abs_tol=1e-12)
        assert math.isclose(book.max_abs[i], report.account.max_abs, abs_tol=1e-12)
        for lvl in ("sector", "asset_class"):
            assert math.isclose(
                book.levels[lvl].sum_abs[i], report.summaries[lvl].sum_abs, abs_tol=1e-12
            )
        expected = [e.fired for e in evaluate_bands(report, BANDS)]
        # equality at the band edge may differ by rounding; none of these sit exactly on it
        assert screen.breached[:, i].tolist() == expected
        # drift is zero exactly when the account is on target
        assert (book.sum_abs[i] < 1e-12) == all(
            abs(d.absolute) < 1e-12 for d in report.levels["instrument"].values()
        )
