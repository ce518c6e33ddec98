"""Keeping a stored sleeve attribution current as fills settle (pure).

An account's lots and cash are pooled; which sleeve owns how much of each instrument and of the
cash is the account's *attribution* (quantities in shares, cash in the account's currency). A
settled fill changes the pooled quantity of one instrument and the cash, so without an update
the attribution stops adding up and the sleeve views fall back to a pro rata split. This module
decides which sleeves a settled fill belongs to:

- **buy**: first to the sleeves short of their target in the instrument (``share x model weight
  x account NAV / price``, in shares), in proportion to the shortfall; what is left after every
  shortfall is met goes pro rata to ``share x model weight`` (by ``share`` when no sleeve
  targets the instrument, e.g. a tax-loss substitute);
- **sell**: first from the sleeves holding more than their target, in proportion to the excess,
  then pro rata to what each still holds;
- **cash** moves with the shares: each sleeve pays for what it receives (fees included) and
  keeps the proceeds of what it sells. A sleeve whose purchases exceed its cash borrows the rest
  from the other sleeves' cash, pro rata to their cash (an internal transfer; no sleeve's cash
  goes below zero).

The NAV and targets are taken before the fill, at the prices given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.orders import Side

QTY_TOLERANCE = 1e-6
"""Shares: attribution and pooled quantities closer than this are equal."""
CASH_TOLERANCE = 0.01
"""Currency: attributed and pooled cash closer than this are equal."""
DIGITS = 6
"""Decimals of the stored attribution (shares and currency)."""


@dataclass(frozen=True, slots=True)
class SleeveTarget:
    """One sleeve's share of the account NAV (fraction) and its model's instrument weights
    (fractions of the sleeve, cash excluded)."""

    sleeve_id: str
    share: float
    weights: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Attribution:
    """``holdings``: sleeve id -> instrument -> shares; ``cash``: sleeve id -> currency."""

    holdings: dict[str, dict[str, float]]
    cash: dict[str, float]

    def pooled(self) -> dict[str, float]:
        """Instrument -> shares summed over the sleeves."""
        out: dict[str, float] = {}
        for per in self.holdings.values():
            for inst, q in per.items():
                out[inst] = out.get(inst, 0.0) + q
        return out

    def adds_up(self, quantities: Mapping[str, float], cash: float) -> bool:
        """Whether the attribution matches the account's pooled shares and cash."""
        mine = self.pooled()
        keys = {*mine, *(k for k, q in quantities.items() if abs(q) > QTY_TOLERANCE)}
        same = all(abs(mine.get(k, 0.0) - quantities.get(k, 0.0)) <= QTY_TOLERANCE for k in keys)
        return same and abs(sum(self.cash.values()) - cash) <= CASH_TOLERANCE


def _split(
    amount: float, caps: Mapping[str, float], weights: Mapping[str, float]
) -> dict[str, float]:
    """``amount`` split first up to ``caps`` (in proportion to them), the rest by ``weights``."""
    out = dict.fromkeys(weights, 0.0)
    room = sum(c for c in caps.values() if c > 0)
    first = min(amount, room)
    if first > 0:
        for k, c in caps.items():
            if c > 0:
                out[k] = out.get(k, 0.0) + first * c / room
    rest = amount - first
    if rest > QTY_TOLERANCE:
        total = sum(w for w in weights.values() if w > 0)
        if total <= 0:
            raise InvalidInput("no sleeve can take the fill", ["sleeves"])
        for k, w in weights.items():
            if w > 0:
                out[k] += rest * w / total
    return out


def _nav(att: Attribution, prices: Mapping[str, float]) -> float:
    """Account NAV in currency at ``prices`` (currency per share)."""
    held = sum(q * prices.get(i, 0.0) for i, q in att.pooled().items())
    return held + sum(att.cash.values())


def settle_fill(
    att: Attribution,
    targets: Sequence[SleeveTarget],
    prices: Mapping[str, float],
    instrument: str,
    side: Side,
    quantity: float,
    cash_change: float,
) -> Attribution:
    """The attribution after one settled fill (see the module doc for the rule).

    Parameters
    ----------
    att
        The attribution before the fill; it must add up to the account before the fill.
    targets
        Every sleeve of the account.
    prices
        Currency per share of the instruments held and of ``instrument`` (NAV and targets).
    instrument, side, quantity
        The fill (shares, > 0).
    cash_change
        Change of the account's cash in currency (negative for a buy: cost and fees).

    Raises
    ------
    InvalidInput
        A sell of more than the sleeves hold, or cash that cannot stay non-negative.
    """
    ids = [t.sleeve_id for t in targets]
    held = {s: att.holdings.get(s, {}).get(instrument, 0.0) for s in ids}
    price = prices[instrument]
    nav = _nav(att, prices)
    want = {t.sleeve_id: t.share * t.weights.get(instrument, 0.0) * nav / price for t in targets}
    if side is Side.BUY:
        shortfall = {s: max(0.0, want[s] - held[s]) for s in ids}
        weights = {t.sleeve_id: t.share * t.weights.get(instrument, 0.0) for t in targets}
        if sum(weights.values()) <= 0:
            weights = {t.sleeve_id: t.share for t in targets}
        moved = _split(quantity, shortfall, weights)
    else:
        if quantity > sum(held.values()) + QTY_TOLERANCE:
            raise InvalidInput(f"the sleeves hold less {instrument} than the sale", ["sleeves"])
        excess = {s: max(0.0, held[s] - want[s]) for s in ids}
        first = min(quantity, sum(excess.values()))
        taken = _split(first, excess, {})
        left = {s: held[s] - taken.get(s, 0.0) for s in ids}
        rest = _split(quantity - first, {}, left) if quantity - first > QTY_TOLERANCE else {}
        moved = {s: taken.get(s, 0.0) + rest.get(s, 0.0) for s in ids}
    sign = 1.0 if side is Side.BUY else -1.0
    after = {s: max(0.0, held[s] + sign * moved.get(s, 0.0)) for s in ids}
    after = _rounded(after, sum(held.values()) + sign * quantity)
    holdings = {s: dict(att.holdings.get(s, {})) for s in ids}
    for s in ids:
        if after[s] > QTY_TOLERANCE:
            holdings[s][instrument] = after[s]
        else:
            holdings[s].pop(instrument, None)
    cash = {s: att.cash.get(s, 0.0) + cash_change * moved.get(s, 0.0) / quantity for s in ids}
    cash = _rounded(_no_negative_cash(cash), sum(att.cash.values()) + cash_change)
    return Attribution(holdings, cash)


def _rounded(parts: dict[str, float], total: float) -> dict[str, float]:
    """``parts`` rounded to :data:`DIGITS` decimals (what the database keeps) so that they
    still sum to ``total`` rounded the same way: the residual goes to the largest part."""
    out = {k: round(v, DIGITS) for k, v in parts.items()}
    if out:
        top = max(out, key=lambda k: out[k])
        out[top] = round(out[top] + round(total, DIGITS) - sum(out.values()), DIGITS)
    return out


def _no_negative_cash(cash: dict[str, float]) -> dict[str, float]:
    """Sleeves below zero borrow from the others pro rata to their cash."""
    deficit = -sum(c for c in cash.values() if c < 0)
    if deficit <= 0:
        return cash
    spare = sum(c for c in cash.values() if c > 0)
    if spare < deficit - CASH_TOLERANCE:
        raise InvalidInput("the account's cash is negative: no attribution can hold", ["cash"])
    return {s: (c - deficit * c / spare if c > 0 else 0.0) for s, c in cash.items()}
