"""A settled fill updates the account's stored sleeve attribution (when it has one), so the
sleeve views keep using it instead of falling back to a pro rata split; the rule is in
:mod:`rebalancer.domain.sleeve_attribution`."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from decimal import Decimal

import structlog

from rebalancer.adapters.repositories.sleeves import SleeveAttributionRepository
from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.model import Account
from rebalancer.domain.orders import Side
from rebalancer.domain.sleeve_attribution import Attribution, SleeveTarget, settle_fill
from rebalancer.service_layer.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)


class AttributionUpdate(enum.StrEnum):
    """What a settled fill did to the stored attribution."""

    NONE = "none"
    """The account has no stored attribution (its sleeves are split pro rata anyway)."""
    UPDATED = "updated"
    """The fill was attributed to the sleeves and stored."""
    STALE = "stale"
    """The stored attribution did not add up before the fill (or could not take it); left as
    is, and the sleeve views say it is stale until a ``PUT .../sleeves/holdings``."""


def follow_settled_fill(
    uow: UnitOfWork,
    account: Account,
    before: tuple[Mapping[str, Decimal], Decimal],
    side: Side,
    instrument: str,
    quantity: Decimal,
    price: Decimal,
) -> AttributionUpdate:
    """Attribute one settled fill of ``account`` to its sleeves (same transaction).

    ``before`` is the account's pooled shares per instrument and its cash (currency) before
    the fill; ``account`` is the account after it. ``quantity`` in shares, ``price`` in
    currency per share.
    """
    repo = SleeveAttributionRepository(uow.conn, uow.tenant_id)
    stored = repo.get(account.id) if account.sleeves else None
    if stored is None:
        return AttributionUpdate.NONE
    att = Attribution(stored.holdings, stored.cash)
    shares_before, cash_before = before
    if not att.adds_up({k: float(v) for k, v in shares_before.items()}, float(cash_before)):
        return AttributionUpdate.STALE
    models = {
        k: r.model for k, r in uow.models.get_many(s.model_id for s in account.sleeves).items()
    }
    targets = [SleeveTarget(s.id, s.share, models[s.model_id].targets) for s in account.sleeves]
    quotes = uow.market.latest({*att.pooled(), instrument})
    prices = {i: float(q.price) for i, q in quotes.items()}
    prices[instrument] = float(price)
    try:
        after = settle_fill(
            att,
            targets,
            prices,
            instrument,
            side,
            float(quantity),
            float(account.cash - cash_before),
        )
    except InvalidInput as exc:
        log.warning("sleeve_attribution_stale", account_id=account.id, reason=str(exc))
        return AttributionUpdate.STALE
    repo.replace(account.id, after.holdings, after.cash)
    return AttributionUpdate.UPDATED
