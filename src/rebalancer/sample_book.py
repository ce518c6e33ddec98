"""A realistic, deterministic sample book for the demo and the tests.

:func:`build_sample_book` gives 23 instruments (skfolio's 20 S&P 500 stocks, whose real closes
are replayed, plus three simulated bond ETFs), three model portfolios (growth, balanced,
income) and 50 accounts of tenant ``"demo"`` with cash and tax lots whose cost bases come from
real historical closes, so that some lots carry gains and others losses, some short-term and
some long-term. Holdings are deliberately off target so the accounts start drifted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

import numpy as np

from rebalancer.domain.model import (
    Account,
    Instrument,
    ModelPortfolio,
    Sleeve,
    TaxLot,
    TaxType,
    blended_targets,
)
from rebalancer.simulators.market import PriceFeed, load_sp500_closes, to_price

TENANT_ID = "demo"
DEFAULT_START = date(2022, 6, 1)
"""Default as-of date of the book; the data set has about seven months of closes after it."""

EQUITY_SECTORS: dict[str, str] = {
    "AAPL": "technology",
    "AMD": "technology",
    "MSFT": "technology",
    "BAC": "financials",
    "JPM": "financials",
    "BBY": "consumer_discretionary",
    "HD": "consumer_discretionary",
    "CVX": "energy",
    "XOM": "energy",
    "RRC": "energy",
    "GE": "industrials",
    "JNJ": "health_care",
    "LLY": "health_care",
    "MRK": "health_care",
    "PFE": "health_care",
    "UNH": "health_care",
    "KO": "consumer_staples",
    "PEP": "consumer_staples",
    "PG": "consumer_staples",
    "WMT": "consumer_staples",
}
"""GICS-like sector of each of skfolio's 20 S&P 500 tickers."""

SUBSTITUTES: dict[str, tuple[str, ...]] = {
    "KO": ("PEP",),
    "PEP": ("KO",),
    "XOM": ("CVX",),
    "CVX": ("XOM",),
    "JPM": ("BAC",),
    "BAC": ("JPM",),
    "MRK": ("PFE",),
    "PFE": ("MRK",),
}
"""Similar but not substantially identical pairs (tax-loss harvesting swaps)."""

SIMULATED_ETFS: dict[str, tuple[str, float, float]] = {
    "AGG": ("aggregate_bond", 100.0, 0.004),
    "BND": ("aggregate_bond", 73.0, 0.004),
    "SHY": ("short_treasury", 82.0, 0.0008),
}
"""Simulated bond ETFs: ticker -> (sector, starting price in USD/share, daily volatility)."""

MODEL_TARGETS: dict[str, tuple[str, dict[str, float], float]] = {
    "growth": (
        "Growth",
        {
            "AAPL": 0.10, "MSFT": 0.10, "AMD": 0.05, "UNH": 0.07, "LLY": 0.06, "JPM": 0.06,
            "HD": 0.06, "BBY": 0.03, "GE": 0.05, "XOM": 0.05, "CVX": 0.04, "PG": 0.05,
            "KO": 0.04, "WMT": 0.04, "JNJ": 0.05, "AGG": 0.10,
        },
        0.05,
    ),
    "balanced": (
        "Balanced",
        {
            "AAPL": 0.06, "MSFT": 0.06, "JNJ": 0.05, "PG": 0.05, "KO": 0.04, "PEP": 0.04,
            "JPM": 0.05, "BAC": 0.03, "XOM": 0.04, "CVX": 0.03, "UNH": 0.05, "WMT": 0.05,
            "AGG": 0.20, "BND": 0.10, "SHY": 0.10,
        },
        0.05,
    ),
    "income": (
        "Income",
        {
            "JNJ": 0.04, "PG": 0.04, "KO": 0.04, "PEP": 0.04, "XOM": 0.04, "CVX": 0.03,
            "MRK": 0.03, "PFE": 0.02, "WMT": 0.02, "AGG": 0.25, "BND": 0.15, "SHY": 0.25,
        },
        0.05,
    ),
}  # fmt: skip
"""Model id -> (name, instrument weights, cash weight); each sums to 1 with cash."""


@dataclass
class SampleBook:
    """Everything the demo loads.

    Attributes
    ----------
    tenant_id
        ``"demo"``.
    start_date
        The book's as-of date; ``prices`` are the closes of that date.
    instruments
        Instrument id -> :class:`~rebalancer.domain.model.Instrument`.
    models
        Model id -> :class:`~rebalancer.domain.model.ModelPortfolio` (version 1).
    accounts
        The accounts, with sleeves, cash (USD) and tax lots.
    prices
        Instrument id -> close in USD per share at ``start_date``.
    households
        Household id -> ids of its accounts.
    simulated
        Instruments without real data: id -> (starting price USD/share, daily volatility).
    """

    tenant_id: str
    start_date: date
    instruments: dict[str, Instrument]
    models: dict[str, ModelPortfolio]
    accounts: list[Account]
    prices: dict[str, Decimal]
    households: dict[str, list[str]] = field(default_factory=dict)
    simulated: dict[str, tuple[float, float]] = field(default_factory=dict)

    def account(self, account_id: str) -> Account:
        """The account with id ``account_id`` (KeyError if absent)."""
        for acct in self.accounts:
            if acct.id == account_id:
                return acct
        raise KeyError(account_id)

    def float_prices(self) -> dict[str, float]:
        """``prices`` as floats (USD per share), as the domain's weight functions take them."""
        return {k: float(v) for k, v in self.prices.items()}

    def price_feed(self, seed: int = 0) -> PriceFeed:
        """A :class:`PriceFeed` continuing from ``start_date`` with this book's instruments."""
        return PriceFeed(
            self.instruments,
            self.start_date,
            seed=seed,
            initial_prices={k: v[0] for k, v in self.simulated.items()},
            daily_volatility={k: v[1] for k, v in self.simulated.items()},
        )


def sample_instruments() -> dict[str, Instrument]:
    """The 23 instruments of the sample book (lot size 1, T+1 settlement)."""
    out = {
        t: Instrument(t, "equity", sector, 1, None, SUBSTITUTES.get(t, ()), 1)
        for t, sector in sorted(EQUITY_SECTORS.items())
    }
    for t, (sector, _, _) in SIMULATED_ETFS.items():
        group = "us_agg_bond" if sector == "aggregate_bond" else None
        out[t] = Instrument(t, "fixed_income", sector, 1, group, (), 1)
    return out


def sample_models() -> dict[str, ModelPortfolio]:
    """The growth, balanced and income models (version 1)."""
    return {
        mid: ModelPortfolio(mid, 1, dict(targets), cash, name)
        for mid, (name, targets, cash) in MODEL_TARGETS.items()
    }


def _split(total: int, parts: int, rng: np.random.Generator) -> list[int]:
    """``total`` whole shares split into ``parts`` positive pieces."""
    parts = max(1, min(parts, total))
    cuts = sorted(int(c) for c in rng.choice(np.arange(1, total), size=parts - 1, replace=False))
    bounds = [0, *cuts, total]
    return [bounds[i + 1] - bounds[i] for i in range(parts)]


def _drifted_weights(
    targets: dict[str, float], equities: list[str], rng: np.random.Generator
) -> dict[str, float]:
    """Target weights perturbed: noise, dropped holdings, legacy holdings, cash off target."""
    out: dict[str, float] = {}
    for inst, w in targets.items():
        if inst == "CASH" or w <= 0:
            continue
        if w <= 0.06 and rng.random() < 0.08:
            continue  # a small position not yet bought
        out[inst] = w * float(np.exp(rng.normal(0.0, 0.2)))
    if rng.random() < 0.35:
        legacy = [t for t in equities if targets.get(t, 0.0) == 0.0]
        if legacy:
            out[str(rng.choice(legacy))] = float(rng.uniform(0.01, 0.04))
    out["CASH"] = targets.get("CASH", 0.0) * float(rng.uniform(0.2, 3.0))
    total = sum(out.values())
    return {k: v / total for k, v in out.items()}


def _lots(
    account_id: str,
    inst: str,
    shares: int,
    start: date,
    rng: np.random.Generator,
) -> list[TaxLot]:
    data = load_sp500_closes()
    k = int(rng.integers(1, 5))
    lots: list[TaxLot] = []
    for j, qty in enumerate(_split(shares, k, rng), start=1):
        short_term = rng.random() < 0.4
        days = int(rng.integers(20, 365)) if short_term else int(rng.integers(380, 1800))
        acquired = start - timedelta(days=days)
        if inst in data.closes:
            past = float(data.closes[inst][data.index_on_or_before(acquired)])
            basis = past * float(np.exp(rng.normal(0.0, 0.02)))
        else:
            basis = SIMULATED_ETFS[inst][1] * float(np.exp(rng.normal(0.0, 0.06)))
        lots.append(
            TaxLot(f"{account_id}-{inst}-{j}", inst, Decimal(qty), to_price(basis), acquired)
        )
    return lots


def build_sample_book(
    seed: int = 7, n_accounts: int = 50, start_date: date = DEFAULT_START
) -> SampleBook:
    """Build the sample book deterministically from ``seed``.

    Parameters
    ----------
    seed
        Seed of every random choice (same seed, same book).
    n_accounts
        Number of accounts; about a quarter hold two sleeves, about one in five belongs to a
        household.
    start_date
        As-of date; must lie inside the S&P 500 data set (1990-01-02 to 2022-12-28), a few
        years after its start so that lots can have history.
    """
    rng = np.random.default_rng(seed)
    instruments = sample_instruments()
    models = sample_models()
    feed = PriceFeed(
        instruments,
        start_date,
        initial_prices={k: v[1] for k, v in SIMULATED_ETFS.items()},
        replay=True,
    )
    prices = feed.current_prices()
    equities = sorted(EQUITY_SECTORS)
    model_ids = sorted(models)
    tax_types = [TaxType.TAXABLE, TaxType.TAX_DEFERRED, TaxType.TAX_EXEMPT]
    accounts: list[Account] = []
    for n in range(1, n_accounts + 1):
        acct_id = f"acct-{n:03d}"
        if rng.random() < 0.25:
            first, second = rng.choice(model_ids, size=2, replace=False)
            share = float(rng.choice([0.5, 0.6, 0.7]))
            sleeves = [
                Sleeve(f"{acct_id}-core", str(first), share),
                Sleeve(f"{acct_id}-satellite", str(second), round(1.0 - share, 10)),
            ]
        else:
            sleeves = [Sleeve(f"{acct_id}-core", str(rng.choice(model_ids)), 1.0)]
        nav = float(np.exp(rng.normal(np.log(250_000.0), 0.8)))
        nav = min(max(nav, 40_000.0), 3_000_000.0)
        weights = _drifted_weights(blended_targets(sleeves, models), equities, rng)
        lots: list[TaxLot] = []
        invested = Decimal(0)
        for inst in sorted(weights):
            if inst == "CASH":
                continue
            shares = int(weights[inst] * nav / float(prices[inst]))
            if shares < 1:
                continue
            lots += _lots(acct_id, inst, shares, start_date, rng)
            invested += shares * prices[inst]
        cash = max(Decimal(0), Decimal(round(nav, 2)) - invested).quantize(Decimal("0.01"))
        tax_type = tax_types[int(rng.choice(3, p=[0.6, 0.25, 0.15]))]
        accounts.append(
            Account(
                acct_id, TENANT_ID, cash, lots, sleeves, None, tax_type, f"Demo account {n:03d}"
            )
        )
    households: dict[str, list[str]] = {}
    members = rng.permutation(n_accounts)
    pos = 0
    for h in range(1, max(1, n_accounts // 10) + 1):
        size = int(rng.integers(2, 4))
        chosen = sorted(int(i) for i in members[pos : pos + size])
        pos += size
        if len(chosen) < 2:
            break
        hh = f"hh-{h:02d}"
        households[hh] = [accounts[i].id for i in chosen]
        for i in chosen:
            accounts[i].household_id = hh
    simulated = {k: (v[1], v[2]) for k, v in SIMULATED_ETFS.items()}
    return SampleBook(
        TENANT_ID, start_date, instruments, models, accounts, prices, households, simulated
    )
