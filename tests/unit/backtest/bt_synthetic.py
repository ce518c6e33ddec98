"""A two-asset world with hand-checkable numbers, shared by the backtest unit tests."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from rebalancer.backtest.market import MarketHistory, history_from_arrays
from rebalancer.domain.model import Account, Instrument, ModelPortfolio, Sleeve, TaxLot, TaxType

START = date(2024, 1, 29)  # a Monday


def trading_days(n: int, start: date = START) -> list[date]:
    out, d = [], start
    while len(out) < n:
        if d.weekday() < 5:
            out.append(d)
        d += timedelta(days=1)
    return out


def jump_history(n: int = 6, jump_day: int = 2, a_after: float = 200.0) -> MarketHistory:
    """A at 100 then ``a_after`` from ``jump_day`` on; B flat at 100. ADV so large that impact
    is nil; half spread 5 bps; daily volatility 1 % (diagonal covariance: < 30 closes)."""
    days = trading_days(n)
    a = [100.0 if k < jump_day else a_after for k in range(n)]
    return history_from_arrays(days, {"A": a, "B": [100.0] * n}, adv_shares=1e13)


def two_asset_world(
    tax_type: TaxType = TaxType.TAX_EXEMPT, cash: str = "0", a_basis: str = "50"
) -> tuple[Account, dict[str, ModelPortfolio], dict[str, Instrument]]:
    """100 A and 100 B at 100 (on a 50/50 target, no cash target)."""
    instruments = {"A": Instrument("A", sector="s1"), "B": Instrument("B", sector="s2")}
    models = {"m": ModelPortfolio("m", 1, {"A": 0.5, "B": 0.5}, 0.0)}
    lots = [
        TaxLot("a1", "A", Decimal(100), Decimal(a_basis), date(2020, 1, 2)),
        TaxLot("b1", "B", Decimal(100), Decimal(100), date(2020, 1, 2)),
    ]
    account = Account("x", "t", Decimal(cash), lots, [Sleeve("x-core", "m", 1.0)], None, tax_type)
    return account, models, instruments
