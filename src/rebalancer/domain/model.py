"""Core domain entities: instruments, model portfolios, sleeves, accounts and tax lots.

Units
-----
- Shares (``quantity``) are :class:`~decimal.Decimal` (whole shares for most instruments, but
  fractional shares are representable); they are what settles.
- Money (``cash``, ``cost_basis_per_share``, prices) is :class:`~decimal.Decimal` in the account
  currency where it settles, ``float`` where it only feeds analytics or the optimizer.
- Weights are ``float`` fractions of net asset value (NAV); cash has a weight too.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from rebalancer.domain.errors import InvalidInput

CASH = "CASH"
"""Pseudo-instrument id used for the cash weight in targets and drift."""

WEIGHT_TOLERANCE = 1e-6
"""Target weights (cash included) must sum to 1 within this tolerance."""


class TaxType(enum.StrEnum):
    """Tax treatment of an account."""

    TAXABLE = "taxable"
    TAX_DEFERRED = "tax_deferred"
    TAX_EXEMPT = "tax_exempt"


@dataclass(frozen=True, slots=True)
class Instrument:
    """A tradable security.

    Attributes
    ----------
    id
        Ticker or other unique symbol, e.g. ``"AAPL"``.
    asset_class
        e.g. ``"equity"``, ``"fixed_income"``.
    sector
        e.g. ``"technology"``.
    lot_size
        Trades are rounded to multiples of this many shares.
    wash_sale_group
        Instruments that are substantially identical share a group; ``None`` means its own group.
    substitutes
        Ids of similar but not substantially identical instruments (tax-loss harvesting).
    settlement_days
        Business days from trade to settlement (T+1 = 1, T+2 = 2).
    """

    id: str
    asset_class: str = "equity"
    sector: str = "unknown"
    lot_size: int = 1
    wash_sale_group: str | None = None
    substitutes: tuple[str, ...] = ()
    settlement_days: int = 1

    @property
    def group(self) -> str:
        """The wash-sale group this instrument belongs to (its own id when it has none)."""
        return self.wash_sale_group or self.id


def validate_targets(targets: Mapping[str, float], field_name: str = "targets") -> None:
    """Check that target weights are non-negative and sum to 1 (cash included).

    Raises
    ------
    InvalidInput
        Naming the offending field, e.g. ``targets.AAPL`` for a negative weight.
    """
    if not targets:
        raise InvalidInput("targets must name at least one instrument or CASH", [field_name])
    for key, weight in targets.items():
        if not (weight == weight) or weight < 0.0:  # NaN or negative
            raise InvalidInput(
                f"target weight of {key} is {weight}; weights must be >= 0",
                [f"{field_name}.{key}"],
            )
    total = float(sum(targets.values()))
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise InvalidInput(
            f"target weights sum to {total:.8f}; they must sum to 1 (cash included) "
            f"within {WEIGHT_TOLERANCE:g}",
            [field_name],
        )


@dataclass(frozen=True, slots=True)
class ModelPortfolio:
    """One version of a model portfolio.

    Attributes
    ----------
    id
        Model id (stable across versions).
    version
        Increases by one on every change of targets.
    targets
        Instrument id -> target weight (fraction of the sleeve), excluding cash.
    cash_target
        Target cash weight (fraction of the sleeve). ``sum(targets) + cash_target == 1``.
    """

    id: str
    version: int
    targets: Mapping[str, float]
    cash_target: float = 0.0
    name: str = ""

    def __post_init__(self) -> None:
        validate_targets({**self.targets, CASH: self.cash_target})

    def weights(self) -> dict[str, float]:
        """Targets with cash included under the :data:`CASH` key."""
        return {**self.targets, CASH: self.cash_target}


@dataclass(frozen=True, slots=True)
class Sleeve:
    """A strategy inside an account, following one model with a share of the account's NAV.

    Attributes
    ----------
    id
        Sleeve id.
    model_id
        The model this sleeve follows.
    share
        Fraction of the account NAV allocated to this sleeve; an account's shares sum to 1.
    """

    id: str
    model_id: str
    share: float = 1.0


@dataclass(slots=True)
class TaxLot:
    """A purchase lot of one instrument held in an account.

    Attributes
    ----------
    lot_id
        Unique id of the lot.
    instrument
        Instrument id.
    quantity
        Shares held (Decimal, > 0).
    cost_basis
        Cost basis per share in account currency.
    acquired
        Trade date of the purchase (holding period starts here).
    """

    lot_id: str
    instrument: str
    quantity: Decimal
    cost_basis: Decimal
    acquired: date

    def unrealized_gain(self, price: Decimal) -> Decimal:
        """Gain in currency if the whole lot were sold at ``price`` (negative for a loss)."""
        return (price - self.cost_basis) * self.quantity

    def is_long_term(self, as_of: date, long_term_days: int = 365) -> bool:
        """Whether the lot has been held more than ``long_term_days`` at ``as_of``."""
        return (as_of - self.acquired).days > long_term_days


@dataclass(slots=True)
class Account:
    """An investment account: cash, tax lots and one or more sleeves.

    Attributes
    ----------
    id
        Account id.
    tenant_id
        Owning tenant (firm); every query is scoped by it.
    cash
        Settled cash in account currency.
    lots
        Open tax lots.
    sleeves
        Strategies held in the account; their shares sum to 1.
    household_id
        Household the account belongs to, if any.
    tax_type
        Tax treatment.
    """

    id: str
    tenant_id: str
    cash: Decimal
    lots: list[TaxLot] = field(default_factory=list)
    sleeves: list[Sleeve] = field(default_factory=list)
    household_id: str | None = None
    tax_type: TaxType = TaxType.TAXABLE
    name: str = ""

    def quantities(self) -> dict[str, Decimal]:
        """Shares held per instrument (sum over lots)."""
        out: dict[str, Decimal] = {}
        for lot in self.lots:
            out[lot.instrument] = out.get(lot.instrument, Decimal(0)) + lot.quantity
        return out

    def market_values(self, prices: Mapping[str, float]) -> dict[str, float]:
        """Market value per instrument in currency, using ``prices`` (currency per share)."""
        return {i: float(q) * float(prices[i]) for i, q in self.quantities().items()}

    def nav(self, prices: Mapping[str, float]) -> float:
        """Net asset value in currency: cash plus the market value of all lots."""
        return float(self.cash) + sum(self.market_values(prices).values())

    def weights(self, prices: Mapping[str, float]) -> dict[str, float]:
        """Current weights per instrument and :data:`CASH` (fractions of NAV, summing to 1)."""
        nav = self.nav(prices)
        if nav <= 0:
            return {CASH: 1.0}
        out = {i: v / nav for i, v in self.market_values(prices).items()}
        out[CASH] = float(self.cash) / nav
        return out

    def lots_of(self, instrument: str) -> Sequence[TaxLot]:
        """The lots held of one instrument."""
        return [lot for lot in self.lots if lot.instrument == instrument]


def blended_targets(
    sleeves: Sequence[Sleeve], models: Mapping[str, ModelPortfolio]
) -> dict[str, float]:
    """Account-level target weights: each sleeve's model weights times the sleeve's share.

    The result includes :data:`CASH` and sums to 1 when the sleeve shares do.
    """
    if not sleeves:
        return {CASH: 1.0}
    share_total = sum(s.share for s in sleeves)
    if abs(share_total - 1.0) > WEIGHT_TOLERANCE:
        raise InvalidInput(
            f"sleeve shares sum to {share_total:.8f}; they must sum to 1", ["sleeves"]
        )
    out: dict[str, float] = {}
    for sleeve in sleeves:
        model = models[sleeve.model_id]
        for inst, w in model.weights().items():
            out[inst] = out.get(inst, 0.0) + sleeve.share * w
    return out
