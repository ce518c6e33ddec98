"""Settlement confirmations update tax lots, cash and realized gains, once per fill; the
sweeper's overdue check raises ``settlement_overdue`` for confirmations that never arrive."""

from __future__ import annotations

import uuid
from datetime import UTC, date
from decimal import Decimal
from typing import Any

from prometheus_client import Counter

from rebalancer.adapters.repositories.coordination import CoordinationRepository
from rebalancer.adapters.repositories.rebalancing import order_from_row
from rebalancer.contracts import SettlementConfirmedV1, StatusEntity
from rebalancer.domain.execution import BLOCK_ACCOUNT_ID
from rebalancer.domain.orders import Side
from rebalancer.domain.settlement import (
    SettledFill,
    apply_settlement,
    buying_power,
    lots_for_partial_fill,
    overdue_since,
    settlement_date,
)
from rebalancer.service_layer.handlers import monitoring
from rebalancer.service_layer.handlers.dispatch import after_order_change
from rebalancer.service_layer.handlers.recommending import _status_event
from rebalancer.service_layer.handlers.sleeve_fills import follow_settled_fill
from rebalancer.service_layer.unit_of_work import UnitOfWork


def apply_settlement_confirmation(uow: UnitOfWork, event: SettlementConfirmedV1) -> bool:
    """Apply one settlement confirmation; False when it was applied before.

    A ``settled`` confirmation creates a lot (buy) or reduces the order's named lots (sell,
    specific-lot identification, consumed in order across partial fills), moves cash and
    records realized gains. A ``failed`` one changes no position and raises an alert. The
    settlement date is checked against the instrument's T+n (``settlement_days`` business
    days after the fill's venue date): a different date raises a
    ``settlement_date_mismatch`` warning alert (the confirmation still applies). A
    confirmation of a block order itself (not of an allocation) is ignored: only the
    accounts' allocations settle. The confirmation that leaves no fill of the account
    awaiting settlement also takes the account's drift snapshot and updates its drift alerts.
    """
    if event.account_id == BLOCK_ACCOUNT_ID:
        return False
    account = uow.accounts.get(event.account_id, lock=True)
    order_id = uuid.UUID(event.order_id)
    order_row = uow.rebalancing.get_order_settled(order_id)  # settled so far: not this one
    row = {
        "id": event.settlement_id,
        "report_id": event.report_id,
        "order_id": order_id,
        "account_id": account.id,
        "instrument": event.instrument,
        "side": str(event.side),
        "quantity": event.quantity,
        "price": event.price,
        "trade_date": event.trade_date,
        "settle_date": event.settle_date,
        "status": str(event.status),
        "reason": event.reason,
    }
    added, fill_date = uow.rebalancing.add_settlement(row)
    if not added:
        return False
    order = order_from_row(order_row)
    _check_settle_date(uow, event, fill_date or event.trade_date)
    if str(event.status) == "failed":
        uow.rebalancing.raise_alert(
            {
                "account_id": account.id,
                "kind": "settlement_failed",
                "level": "settlement",
                "key": event.settlement_id,
                "severity": "critical",
                "state": "raised",
                "message": (
                    f"settlement of {event.side} {event.quantity} {event.instrument} "
                    f"failed: {event.reason or 'no reason given'}"
                ),
            }
        )
    else:
        before = (account.quantities(), account.cash)
        lots: tuple[tuple[str, Decimal], ...] = ()
        if order.side == Side.SELL and order.lots:
            done = Decimal(order_row.settled_quantity)
            lots = lots_for_partial_fill(order.lots, done, event.quantity)
        result = apply_settlement(
            account,
            SettledFill(
                fill_id=event.settlement_id,
                order_id=event.order_id,
                account_id=account.id,
                instrument=event.instrument,
                side=Side(str(event.side)),
                quantity=event.quantity,
                price=event.price,
                trade_date=event.trade_date,
                lots=lots,
            ),
        )
        uow.accounts.sync_lots(account)
        follow_settled_fill(
            uow,
            account,
            before,
            Side(str(event.side)),
            event.instrument,
            event.quantity,
            event.price,
        )
        uow.rebalancing.add_realized_gains(
            [
                {
                    "settlement_id": event.settlement_id,
                    "account_id": account.id,
                    "lot_id": g.lot_id,
                    "instrument": g.instrument,
                    "quantity": g.quantity,
                    "proceeds": g.proceeds * g.quantity,
                    "cost": g.cost_basis * g.quantity,
                    "gain": g.gain,
                    "term": str(g.term),
                    "settle_date": event.settle_date,
                    "trade_date": event.trade_date,
                }
                for g in result.realized
            ]
        )
    uow.publish(
        _status_event(
            uow,
            StatusEntity.SETTLEMENT,
            event.settlement_id,
            account.id,
            str(event.status),
            None,
            event.reason,
            correlation_id=str(order.recommendation_id),
        )
    )
    coordination = CoordinationRepository(uow.conn, uow.tenant_id)
    purchases, proceeds = coordination.refresh_unsettled(account.id)
    coordination.clear_overdue_alert(event.report_id)
    after_order_change(uow, uuid.UUID(order.recommendation_id), account.id)
    if not purchases and not proceeds:
        # the account's last fill awaiting settlement: one drift snapshot (and alert update)
        # of the settled book, not one per fill of a burst (about a third of a settlement's
        # cost); market-data ticks snapshot every account anyway
        monitoring.refresh_account(uow, account.id, account=account)
    uow.commit()
    return True


def _check_settle_date(uow: UnitOfWork, event: SettlementConfirmedV1, traded: date) -> None:
    """Alert when the confirmed settlement date is not the instrument's T+n date from
    ``traded`` (the fill report's venue date, else the confirmation's trade date)."""
    instrument = uow.instruments.get(event.instrument)
    expected = settlement_date(traded, instrument)
    if event.settle_date == expected:
        return
    uow.rebalancing.raise_alert(
        {
            "account_id": event.account_id,
            "kind": "settlement_date_mismatch",
            "level": "settlement",
            "key": event.settlement_id,
            "severity": "warning",
            "state": "raised",
            "message": (
                f"{event.instrument} traded {traded} settles T+{instrument.settlement_days} on "
                f"{expected}, but the confirmation says {event.settle_date}"
            ),
        }
    )


OVERDUE = Counter(
    "rebalancer_settlements_overdue_total", "settlement_overdue alerts raised (one per fill)"
)


def raise_overdue_settlements(
    uow: UnitOfWork, today: date, *, grace_business_days: int = 1, limit: int = 500
) -> list[str]:
    """Raise one ``settlement_overdue`` alert per fill whose confirmation never came (commits).

    A fill is overdue once ``today`` is after its expected settlement date (T+``settlement_days``
    business days from the venue date) plus ``grace_business_days`` business days
    (:func:`~rebalancer.domain.settlement.overdue_since`). The fill is stamped in the same
    transaction (``executions.overdue_alerted_at``) and claimed with ``SKIP LOCKED``, so
    concurrent sweepers raise it once. A confirmation arriving later clears the alert.

    Returns
    -------
    list[str]
        Report ids of the fills alerted now.
    """
    repo = CoordinationRepository(uow.conn, uow.tenant_id)
    alerted = []
    for f in repo.unconfirmed_fills(today, grace_business_days, limit):
        traded = f.venue_time.astimezone(UTC).date()
        expected = overdue_since(
            traded, int(f.settlement_days), today, grace_business_days=grace_business_days
        )
        if expected is None:
            continue
        uow.rebalancing.raise_alert(
            {
                "account_id": f.account_id,
                "kind": "settlement_overdue",
                "level": "settlement",
                "key": f.report_id,
                "severity": "critical",
                "state": "raised",
                "value": float(f.fill_quantity * f.fill_price),
                "message": (
                    f"no settlement confirmation for {f.side} {f.fill_quantity} {f.instrument} "
                    f"traded {traded} (fill {f.report_id}): expected on {expected}, "
                    f"{grace_business_days} business day(s) of grace passed; ask the custodian"
                ),
            }
        )
        repo.mark_overdue_alerted(f.report_id)
        alerted.append(f.report_id)
    uow.commit()
    OVERDUE.inc(len(alerted))
    return alerted


def account_cash(uow: UnitOfWork, account_id: str, default_currency: str) -> dict[str, Any]:
    """Settled cash, unsettled purchases and proceeds and buying power of an account.

    Raises
    ------
    NotFound
        No such account for the tenant.
    """
    uow.accounts.require(account_id)
    row = CoordinationRepository(uow.conn, uow.tenant_id).cash_row(account_id)
    zero = Decimal(0)
    settled = zero if row is None else Decimal(row.settled)
    purchases = zero if row is None else Decimal(row.unsettled_purchases)
    return {
        "currency": default_currency if row is None else row.currency,
        "settled": settled,
        "unsettled_purchases": purchases,
        "unsettled_proceeds": zero if row is None else Decimal(row.unsettled_proceeds),
        "buying_power": buying_power(settled, [(Decimal(1), purchases)]),
    }
