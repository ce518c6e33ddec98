"""Settlement confirmations update tax lots, cash and realized gains, once per fill."""

from __future__ import annotations

import uuid
from decimal import Decimal

from rebalancer.adapters.repositories.rebalancing import order_from_row
from rebalancer.contracts import SettlementConfirmedV1, StatusEntity
from rebalancer.domain.orders import Side
from rebalancer.domain.settlement import SettledFill, apply_settlement, lots_for_partial_fill
from rebalancer.service_layer.handlers.recommending import _status_event
from rebalancer.service_layer.handlers.trading import _after_order_change
from rebalancer.service_layer.unit_of_work import UnitOfWork


def apply_settlement_confirmation(uow: UnitOfWork, event: SettlementConfirmedV1) -> bool:
    """Apply one settlement confirmation; False when it was applied before.

    A ``settled`` confirmation creates a lot (buy) or reduces the order's named lots (sell,
    specific-lot identification, consumed in order across partial fills), moves cash and
    records realized gains. A ``failed`` one changes no position and raises an alert.
    """
    account = uow.accounts.get(event.account_id, lock=True)
    order_id = uuid.UUID(event.order_id)
    previous = [s for s in uow.rebalancing.settlements(account.id) if s.order_id == order_id]
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
    if not uow.rebalancing.add_settlement(row):
        return False
    order = order_from_row(uow.rebalancing.get_order(order_id))
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
        lots: tuple[tuple[str, Decimal], ...] = ()
        if order.side == Side.SELL and order.lots:
            done = sum((s.quantity for s in previous if s.status == "settled"), Decimal(0))
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
    _after_order_change(uow, uuid.UUID(order.recommendation_id))
    uow.commit()
    return True
