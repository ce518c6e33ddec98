"""Approval turns a recommendation into orders (exactly once); execution reports move orders
through their state machine; cancels go to the venue."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from rebalancer.adapters.repositories.rebalancing import order_from_row, order_values
from rebalancer.contracts import (
    EventType,
    ExecutionReportV1,
    OrderCancelRequestedV1,
    OrderLotV1,
    OrderPlacedV1,
    StatusEntity,
    new_event,
)
from rebalancer.domain.errors import Conflict, IllegalTransition, InvalidInput, NotFound
from rebalancer.domain.orders import (
    ExecutionReport,
    Order,
    OrderStatus,
    ReportKind,
    ReportOutcome,
    Side,
    Trade,
    apply_report,
    generate_orders,
    mark_sent,
    request_cancel,
)
from rebalancer.domain.rebalance import RebalanceStatus, status_from_orders
from rebalancer.service_layer.handlers.recommending import _status_event
from rebalancer.service_layer.unit_of_work import UnitOfWork


def _trades_from_analysis(analysis: dict[str, Any], request: dict[str, Any]) -> list[Trade]:
    prices = {i["id"]: Decimal(str(i["price"])) for i in request["instruments"]}
    trades = []
    for t in analysis.get("trades", []):
        qty = Decimal(str(t["quantity"]))
        if qty <= 0:
            continue
        lots = tuple(
            (str(lot["lot_id"]), Decimal(str(lot["quantity"]))) for lot in t.get("lots", [])
        )
        trades.append(
            Trade(t["instrument"], Side(t["side"]), qty, lots, prices.get(t["instrument"]))
        )
    return trades


def _order_placed(uow: UnitOfWork, order: Order) -> Any:
    return new_event(
        EventType.ORDER_PLACED,
        OrderPlacedV1(
            order_id=order.order_id,
            recommendation_id=order.recommendation_id,
            account_id=order.account_id,
            instrument=order.instrument,
            side=str(order.side),
            quantity=order.quantity,
            order_type=str(order.order_type),
            limit_price=order.limit_price,
            time_in_force=str(order.tif),
            lots=[OrderLotV1(lot_id=lot_id, quantity=q) for lot_id, q in order.lots],
            arrival_price=order.arrival_price or Decimal("0.01"),
        ),
        tenant_id=uow.tenant_id,
        key=order.account_id,
        correlation_id=order.recommendation_id,
    )


def _send(uow: UnitOfWork, order: Order) -> None:
    mark_sent(order)
    uow.rebalancing.update_order(uuid.UUID(order.order_id), status=str(order.status))
    uow.publish(
        _order_placed(uow, order),
        _status_event(
            uow,
            StatusEntity.ORDER,
            order.order_id,
            order.account_id,
            str(order.status),
            str(OrderStatus.NEW),
            correlation_id=order.recommendation_id,
        ),
    )


def approve(uow: UnitOfWork, recommendation_id: uuid.UUID, actor: str) -> list[dict[str, Any]]:
    """Approve a recommendation and create its orders, exactly once.

    Approving an already approved recommendation returns its orders and creates nothing. The
    unique key (recommendation, account, instrument) on orders makes a second set impossible
    even under concurrent approvals or retries.

    Raises
    ------
    Conflict
        The recommendation is a ``no_trade`` decision or was rejected/superseded.
    """
    rec = uow.rebalancing.get_recommendation(recommendation_id, lock=True)
    if rec.status == "approved":
        return [order_view(r) for r in uow.rebalancing.orders(recommendation_id=rec.id)]
    if rec.status != "pending_approval":
        raise Conflict(
            f"recommendation {rec.id} is {rec.status}; only a pending_approval one can be approved",
            ["recommendation_id"],
        )
    account = uow.accounts.get(rec.account_id, lock=True)
    trades = _trades_from_analysis(rec.response, rec.request)
    if not trades:
        raise InvalidInput("the recommendation has no trades to approve", ["recommendation_id"])
    orders = generate_orders(str(rec.id), account.id, trades, cash=account.cash)
    uow.rebalancing.insert_orders([order_values(o) for o in orders])
    for order in orders:
        if order.wave == 0:
            _send(uow, order)
    uow.rebalancing.set_recommendation_status(rec.id, "approved", approved_by=actor)
    uow.rebalancing.set_rebalance_status(rec.rebalance_id, "trading")
    uow.audit.record(
        actor,
        "approve",
        "recommendation",
        str(rec.id),
        {"orders": len(orders), "account_id": account.id},
    )
    uow.publish(
        _status_event(
            uow,
            StatusEntity.REBALANCE,
            str(rec.rebalance_id),
            account.id,
            "trading",
            "pending_approval",
        )
    )
    uow.commit()
    return [order_view(r) for r in _orders_now(uow, rec.id)]


def _orders_now(uow: UnitOfWork, recommendation_id: uuid.UUID) -> list[Any]:
    with UnitOfWork(uow.engine, uow.tenant_id) as fresh:
        return fresh.rebalancing.orders(recommendation_id=recommendation_id)


def apply_execution_report(uow: UnitOfWork, event: ExecutionReportV1) -> ReportOutcome:
    """Apply one venue report to its order (once); refresh the rebalance's status."""
    report = ExecutionReport(
        report_id=event.report_id,
        order_id=event.order_id,
        kind=ReportKind(str(event.kind)),
        fill_quantity=event.fill_quantity,
        fill_price=event.fill_price,
        cumulative_quantity=event.cumulative_quantity,
        sequence=event.sequence,
        reason=event.reason or "",
    )
    record = {
        "report_id": event.report_id,
        "kind": str(event.kind),
        "fill_quantity": event.fill_quantity,
        "fill_price": event.fill_price,
        "cumulative_quantity": event.cumulative_quantity,
        "sequence": event.sequence,
        "reason": event.reason,
        "venue_time": event.venue_time,
    }
    try:
        oid = uuid.UUID(event.order_id)
        row = uow.rebalancing.get_order(oid, lock=True)
    except (ValueError, NotFound):  # unknown order: record the report, change nothing
        uow.rebalancing.add_execution(
            {**record, "order_id": None, "outcome": str(ReportOutcome.REJECTED_UNKNOWN)}
        )
        uow.commit()
        return ReportOutcome.REJECTED_UNKNOWN
    order = order_from_row(row)
    previous = order.status
    try:
        outcome = apply_report(order, report)
    except (IllegalTransition, InvalidInput) as exc:
        uow.rebalancing.add_execution(
            {**record, "order_id": oid, "outcome": f"refused: {exc.detail}"[:500]}
        )
        uow.commit()
        return ReportOutcome.IGNORED_LATE
    if not uow.rebalancing.add_execution({**record, "order_id": oid, "outcome": str(outcome)}):
        uow.commit()
        return ReportOutcome.DUPLICATE
    if outcome in (ReportOutcome.APPLIED, ReportOutcome.IGNORED_LATE):
        values = order_values(order)
        values.pop("id")
        if report.kind == ReportKind.REJECTED:
            values["reason"] = report.reason
        uow.rebalancing.update_order(oid, **values)
        if order.status != previous:
            uow.publish(
                _status_event(
                    uow,
                    StatusEntity.ORDER,
                    order.order_id,
                    order.account_id,
                    str(order.status),
                    str(previous),
                    report.reason or None,
                    correlation_id=order.recommendation_id,
                )
            )
        _after_order_change(uow, uuid.UUID(order.recommendation_id))
    uow.commit()
    return outcome


def _after_order_change(uow: UnitOfWork, recommendation_id: uuid.UUID) -> None:
    """Send the buy wave once the sells are done, and refresh the rebalance status."""
    rec = uow.rebalancing.get_recommendation(recommendation_id)
    orders = [order_from_row(r) for r in uow.rebalancing.orders(recommendation_id=rec.id)]
    wave0_done = all(o.status.terminal for o in orders if o.wave == 0)
    if wave0_done:
        for o in orders:
            if o.wave == 1 and o.status == OrderStatus.NEW:
                _send(uow, o)
    reb = uow.rebalancing.get_rebalance(rec.rebalance_id, lock=True)
    status = str(_rebalance_status(uow, rec.account_id, orders))
    if status != reb.status:
        uow.rebalancing.set_rebalance_status(reb.id, status)
        uow.publish(
            _status_event(
                uow, StatusEntity.REBALANCE, str(reb.id), rec.account_id, status, reb.status
            )
        )


def _rebalance_status(uow: UnitOfWork, account_id: str, orders: list[Order]) -> str:
    """The orders' status, held at ``trading`` until every fill has a settlement outcome.

    A failed settlement caps the result at ``partially_complete`` (its alert is raised).
    """
    derived = status_from_orders(orders)
    if not derived.terminal or derived == RebalanceStatus.NO_TRADE:
        return str(derived)
    outcome = {s.report_id: s.status for s in uow.rebalancing.settlements(account_id)}
    fills = [
        e.report_id
        for e in uow.rebalancing.executions(uuid.UUID(o.order_id) for o in orders)
        if e.kind in ("fill", "partial_fill") and e.outcome in ("applied", "ignored_late")
    ]
    if any(f not in outcome for f in fills):
        return str(RebalanceStatus.TRADING)
    if derived == RebalanceStatus.COMPLETE and any(outcome[f] == "failed" for f in fills):
        return str(RebalanceStatus.PARTIALLY_COMPLETE)
    return str(derived)


def cancel_order(uow: UnitOfWork, order_id: uuid.UUID, actor: str, reason: str) -> dict[str, Any]:
    """Ask the venue to cancel a working order (a never-sent order is cancelled at once)."""
    row = uow.rebalancing.get_order(order_id, lock=True)
    order = order_from_row(row)
    previous = order.status
    if order.status.terminal:
        raise Conflict(f"order {order_id} is already {order.status}", ["order_id"])
    request_cancel(order)
    uow.rebalancing.update_order(order_id, status=str(order.status))
    if order.status == OrderStatus.CANCEL_REQUESTED:
        uow.publish(
            new_event(
                EventType.ORDER_CANCEL_REQUESTED,
                OrderCancelRequestedV1(
                    order_id=order.order_id, account_id=order.account_id, reason=reason
                ),
                tenant_id=uow.tenant_id,
                key=order.account_id,
                correlation_id=order.recommendation_id,
            )
        )
    uow.publish(
        _status_event(
            uow,
            StatusEntity.ORDER,
            order.order_id,
            order.account_id,
            str(order.status),
            str(previous),
            reason,
            correlation_id=order.recommendation_id,
        )
    )
    uow.audit.record(actor, "cancel", "order", str(order_id), {"reason": reason})
    _after_order_change(uow, uuid.UUID(order.recommendation_id))
    uow.commit()
    return order_view(uow.rebalancing.get_order(order_id))


def order_view(row: Any) -> dict[str, Any]:
    """JSON view of a stored order."""
    return {
        "id": str(row.id),
        "recommendation_id": str(row.recommendation_id),
        "account_id": row.account_id,
        "instrument": row.instrument,
        "side": row.side,
        "quantity": str(row.quantity),
        "filled_quantity": str(row.filled_quantity),
        "avg_fill_price": None if row.avg_fill_price is None else str(row.avg_fill_price),
        "status": row.status,
        "order_type": row.order_type,
        "limit_price": None if row.limit_price is None else str(row.limit_price),
        "time_in_force": row.time_in_force,
        "lots": row.lots,
        "arrival_price": None if row.arrival_price is None else str(row.arrival_price),
        "reason": row.reason,
        "wave": row.wave,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }
