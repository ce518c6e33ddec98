"""The optimizer request for one account, built from plain domain state (pure).

Both the live service (:func:`rebalancer.service_layer.handlers.recommending.build_request`,
which loads the state from the database) and the backtest (which replays it from price history)
call :func:`make_request`, so the two give the same :class:`AnalyzeRequest`, hence the same
decision, for the same state by construction.

Units: prices are currency per share, ``adv_shares`` shares per day, ``daily_volatility`` a
fraction per day, ``half_spread_bps`` basis points; closes are currency per share, oldest first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Protocol

from rebalancer.analytics.risk_model import DEFAULT_DAILY_VOL, estimate_covariance
from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.model import (
    CASH,
    Account,
    Instrument,
    ModelPortfolio,
    TaxType,
    blended_targets,
)
from rebalancer.optimizer.schemas import (
    AnalyzeRequest,
    CovarianceRiskModel,
    InstrumentIn,
    LotIn,
    Policy,
    Portfolio,
    RecentBuy,
)

DEFAULT_ADV_SHARES = 1_000_000.0
"""ADV (shares per day) assumed when the market data has none."""
DEFAULT_HALF_SPREAD_BPS = 5.0
"""Half spread (bps) assumed when the market data has none."""


class Quote(Protocol):
    """Latest market data of one instrument (the repository's ``Quote`` fits)."""

    @property
    def price(self) -> Decimal | float:
        """Close, currency per share."""
        ...

    @property
    def adv_shares(self) -> float | None:
        """Average daily volume, shares."""
        ...

    @property
    def daily_volatility(self) -> float | None:
        """Standard deviation of daily returns (fraction)."""
        ...

    @property
    def half_spread_bps(self) -> float | None:
        """Half the bid-ask spread, basis points."""
        ...


@dataclass(frozen=True, slots=True)
class MarketStats:
    """A :class:`Quote` held in memory (the backtest's market data of one day)."""

    price: float
    adv_shares: float | None = None
    daily_volatility: float | None = None
    half_spread_bps: float | None = None


@dataclass(frozen=True, slots=True)
class LossSale:
    """A sale at a loss of ``instrument`` on ``date``: no buy of its wash-sale group may follow
    within ``policy.wash_sale_days``."""

    instrument: str
    date: date


def involved_instruments(
    account: Account, models: Mapping[str, ModelPortfolio]
) -> tuple[dict[str, float], list[str]]:
    """Blended targets (cash included) and the sorted ids held or targeted."""
    targets = blended_targets(account.sleeves, models)
    ids = sorted({*account.quantities(), *(k for k in targets if k != CASH)})
    return targets, ids


def _blocked_buys(
    instruments: Mapping[str, Instrument],
    ids: Sequence[str],
    loss_sales: Sequence[LossSale],
    as_of: date,
    window_days: int,
) -> list[str]:
    """Ids whose wash-sale group was sold at a loss within the window before ``as_of``."""
    since = as_of - timedelta(days=window_days)
    groups = {
        instruments[s.instrument].group if s.instrument in instruments else s.instrument
        for s in loss_sales
        if since <= s.date <= as_of
    }
    return [i for i in ids if instruments[i].group in groups]


@dataclass(frozen=True, slots=True)
class MarketInputs:
    """The part of a request that depends only on the instruments and the market data.

    Every account holding or targeting the same instruments at the same ``as_of`` gets the same
    instrument entries and risk model, so a batch builds them once per instrument set instead of
    once per account (the covariance estimate and its 2,500 floats for 50 instruments were most
    of the per-account build time).
    """

    ids: tuple[str, ...]
    """Sorted instrument ids, the risk model's row/column order."""
    instruments: tuple[InstrumentIn, ...]
    """One entry per id (prices currency per share, ADV shares per day)."""
    risk_model: CovarianceRiskModel
    """Covariance of annual returns (fraction^2 per year) of ``ids``."""


def market_inputs(
    ids: Sequence[str],
    instruments: Mapping[str, Instrument],
    quotes: Mapping[str, Quote],
    closes: Mapping[str, Sequence[float]],
    *,
    risk_model: CovarianceRiskModel | None = None,
) -> MarketInputs:
    """The instrument entries and the risk model of ``ids`` (sorted, every one priced).

    ``risk_model`` reuses a covariance estimated before for the same ids, closes and daily
    volatilities (a batch worker keeps them across chunks); it is estimated from ``closes`` when
    omitted.
    """
    id_set = set(ids)
    if risk_model is None:
        vols = {i: quotes[i].daily_volatility for i in ids}
        cov = estimate_covariance(ids, {i: closes.get(i, ()) for i in ids}, vols)
        risk_model = CovarianceRiskModel(instruments=list(ids), covariance=cov.tolist())
    entries = tuple(
        InstrumentIn(
            id=i,
            price=float(quotes[i].price),
            adv_shares=quotes[i].adv_shares or DEFAULT_ADV_SHARES,
            daily_volatility=quotes[i].daily_volatility or DEFAULT_DAILY_VOL,
            half_spread_bps=quotes[i].half_spread_bps or DEFAULT_HALF_SPREAD_BPS,
            sector=instruments[i].sector,
            asset_class=instruments[i].asset_class,
            lot_size=instruments[i].lot_size,
            wash_sale_group=instruments[i].wash_sale_group,
            substitutes=[s for s in instruments[i].substitutes if s in id_set],
        )
        for i in ids
    )
    return MarketInputs(tuple(ids), entries, risk_model)


def make_request(
    account: Account,
    models: Mapping[str, ModelPortfolio],
    instruments: Mapping[str, Instrument],
    quotes: Mapping[str, Quote],
    closes: Mapping[str, Sequence[float]],
    as_of: date,
    policy: Policy,
    *,
    recent_buys: Sequence[RecentBuy] = (),
    recent_loss_sales: Sequence[LossSale] = (),
    market: MarketInputs | None = None,
) -> AnalyzeRequest:
    """The optimizer request for ``account`` at ``as_of``.

    Parameters
    ----------
    account
        Cash (currency), open tax lots and sleeves.
    models
        Model id -> model for (at least) every sleeve of the account.
    instruments
        Instrument id -> security master entry for every instrument held or targeted.
    quotes
        Instrument id -> latest market data (price, ADV, volatility, half spread).
    closes
        Instrument id -> recent daily closes, oldest first (the covariance estimate).
    as_of
        Decision date.
    policy
        Costs, tax rates and limits. For a tax-deferred or tax-exempt account the tax rates
        are set to 0: selling there realizes no taxable gain (and harvests no loss).
    recent_buys
        Purchases without an open lot that still count for the wash-sale window.
    recent_loss_sales
        Loss sales of the last ``policy.wash_sale_days``: buys of their wash-sale group are
        forbidden (added to ``policy.no_buy``), so a loss sale is never washed afterwards.
    market
        :func:`market_inputs` built before from the same ``instruments``, ``quotes`` and
        ``closes``; used when its ids are exactly the account's (else built here). The request
        is the same either way.

    Raises
    ------
    InvalidInput
        When an instrument held or targeted has no price yet.
    """
    targets, ids = involved_instruments(account, models)
    missing = [i for i in ids if i not in quotes]
    if missing:
        raise InvalidInput(
            f"no price for {', '.join(missing)}; publish market data for it first", ["instruments"]
        )
    if market is None or market.ids != tuple(ids):
        market = market_inputs(ids, instruments, quotes, closes)
    blocked = _blocked_buys(instruments, ids, recent_loss_sales, as_of, policy.wash_sale_days)
    if blocked:
        policy = policy.model_copy(update={"no_buy": sorted({*policy.no_buy, *blocked})})
    if account.tax_type != TaxType.TAXABLE:
        policy = policy.model_copy(update={"short_term_rate": 0.0, "long_term_rate": 0.0})
    id_set = set(ids)
    return AnalyzeRequest(
        as_of=as_of,
        portfolio=Portfolio(
            cash=float(account.cash),
            lots=[
                LotIn(
                    lot_id=lot.lot_id,
                    instrument=lot.instrument,
                    quantity=float(lot.quantity),
                    cost_basis=float(lot.cost_basis),
                    acquired=lot.acquired,
                )
                for lot in account.lots
            ],
        ),
        recent_buys=[b for b in recent_buys if b.instrument in id_set],
        targets={k: float(v) for k, v in targets.items() if v > 0 or k == CASH},
        instruments=list(market.instruments),
        risk_model=market.risk_model,
        policy=policy,
    )
