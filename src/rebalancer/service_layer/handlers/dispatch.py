"""Shared steps of the trading handlers (no commit here): send an order, apply one report to one
order, release the buy wave under the good-faith guard, and derive the rebalance status."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from prometheus_client import Counter

from rebalancer.adapters.repositories.coordination import CoordinationRepository
from rebalancer.adapters.repositories.execution import ExecutionRepository
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
from rebalancer.domain.errors import IllegalTransition, InvalidInput
from rebalancer.domain.execution import GOOD_FAITH_MARKET_BUFFER_BPS, BuyToSize, size_buys
from rebalancer.domain.orders import (
    ExecutionReport,
    Order,
    OrderStatus,
    ReportKind,
    ReportOutcome,
    Side,
    apply_report,
    transition,
)
from rebalancer.domain.rebalance import (
    REBALANCE_TERMINAL,
    OrderTally,
    RebalanceStatus,
    status_from_tally,
)
from rebalancer.domain.settlement import buying_power
from rebalancer.service_layer.handlers.quality import record_realized_cost
from rebalancer.service_layer.handlers.recommending import _status_event
from rebalancer.service_layer.unit_of_work import UnitOfWork

REPORTS = Counter("rebalancer_execution_reports_total", "Execution reports by outcome", ["outcome"])


def execution_repo(uow: UnitOfWork) -> ExecutionRepository:
    """The execution repository on the unit of work's transaction."""
    return ExecutionRepository(uow.conn, uow.tenant_id)


def order_status_event(uow: UnitOfWork, order: Order, previous: OrderStatus, detail: str) -> Any:
    """``status_updated`` event of an order."""
    return _status_event(
        uow,
        StatusEntity.ORDER,
        order.order_id,
        order.account_id,
        str(order.status),
        str(previous),
        detail or None,
        correlation_id=order.recommendation_id,
    )


def placed_event(uow: UnitOfWork, order: Order, account_key: str | None = None) -> Any:
    """``order_placed`` event (the venue's copy of the order; a re-send repeats it)."""
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
        key=account_key or order.account_id,
        correlation_id=order.recommendation_id,
    )


def cancel_event(uow: UnitOfWork, order_id: str, account_id: str, reason: str) -> Any:
    """``order_cancel_requested`` event for the venue (a block's goes under ``_block``)."""
    return new_event(
        EventType.ORDER_CANCEL_REQUESTED,
        OrderCancelRequestedV1(order_id=order_id, account_id=account_id, reason=reason),
        tenant_id=uow.tenant_id,
        key=account_id,
        correlation_id=order_id,
    )


def send_order(uow: UnitOfWork, order: Order, *, via_block: bool = False) -> None:
    """Mark a new order sent; publish it to the venue unless its block carries it."""
    if via_block:
        previous = _to_sent(order)
        uow.rebalancing.update_order(uuid.UUID(order.order_id), status=str(order.status))
        uow.publish(order_status_event(uow, order, previous, "in block"))
        return
    send_orders(uow, [order])


def _to_sent(order: Order) -> OrderStatus:
    """Move a new order to ``sent`` (others keep their status); returns the status before."""
    previous = order.status
    if order.status == OrderStatus.NEW:
        transition(order, OrderStatus.SENT)
    return previous


def send_orders(uow: UnitOfWork, orders: Sequence[Order]) -> None:
    """Mark orders sent (new ones become ``sent``) and publish each to the venue: per order
    its ``order_placed`` and status events, in order; the rows are marked with one statement
    per resulting status (an approval sends its first wave in one)."""
    by_status: dict[str, list[uuid.UUID]] = {}
    for order in orders:
        previous = _to_sent(order)
        by_status.setdefault(str(order.status), []).append(uuid.UUID(order.order_id))
        uow.publish(placed_event(uow, order), order_status_event(uow, order, previous, ""))
    for status, ids in by_status.items():
        uow.rebalancing.mark_orders_sent(ids, status)


def domain_report(event: ExecutionReportV1) -> ExecutionReport:
    """The domain view of a venue report."""
    return ExecutionReport(
        report_id=event.report_id,
        order_id=event.order_id,
        kind=ReportKind(str(event.kind)),
        fill_quantity=event.fill_quantity,
        fill_price=event.fill_price,
        cumulative_quantity=event.cumulative_quantity,
        sequence=event.sequence,
        reason=event.reason or "",
    )


def execution_record(event: ExecutionReportV1) -> dict[str, Any]:
    """Columns of the ``executions`` row of a report (without order id and outcome)."""
    return {
        "report_id": event.report_id,
        "kind": str(event.kind),
        "fill_quantity": event.fill_quantity,
        "fill_price": event.fill_price,
        "cumulative_quantity": event.cumulative_quantity,
        "sequence": event.sequence,
        "reason": event.reason,
        "venue_time": event.venue_time,
    }


def apply_to_order(uow: UnitOfWork, row: Any, event: ExecutionReportV1) -> ReportOutcome:
    """Apply one report to a locked order row and record it; no commit.

    Every report is recorded in ``executions`` with its outcome (``applied``,
    ``ignored_late``, ``duplicate`` for a repeated sequence, ``refused: ...`` for an overfill
    or an illegal change); a repeated report id is not recorded twice.
    """
    oid = row.id
    record = {**execution_record(event), "order_id": oid}
    order = order_from_row(row)
    previous = order.status
    try:
        outcome = apply_report(order, domain_report(event))
    except (IllegalTransition, InvalidInput) as exc:
        refused = {**record, "outcome": f"refused: {exc.detail}"[:500]}
        if uow.rebalancing.add_execution(refused, row.account_id):
            REPORTS.labels("refused").inc()
            return ReportOutcome.IGNORED_LATE
        REPORTS.labels("duplicate").inc()
        return ReportOutcome.DUPLICATE
    if not uow.rebalancing.add_execution({**record, "outcome": str(outcome)}, row.account_id):
        REPORTS.labels("duplicate").inc()
        return ReportOutcome.DUPLICATE
    REPORTS.labels(str(outcome)).inc()
    if outcome not in (ReportOutcome.APPLIED, ReportOutcome.IGNORED_LATE):
        return outcome
    values = order_values(order)
    for key in ("id", "quantity", "lots", "wave"):
        values.pop(key)
    if str(event.kind) in ("rejected", "expired", "cancelled"):
        values["reason"] = event.reason
    uow.rebalancing.update_order(oid, **values)
    if event.kind.is_fill and event.fill_quantity > 0:  # traded, not yet settled
        CoordinationRepository(uow.conn, uow.tenant_id).refresh_unsettled(order.account_id)
    if order.status != previous:
        uow.publish(order_status_event(uow, order, previous, event.reason or ""))
    if order.status != previous and order.status.terminal:
        record_realized_cost(uow, order, row.estimated_cost_bps)
        # Only an order that finishes can move its rebalance: the status is ``trading`` while
        # any order works, and the buy wave waits until every first-wave order is finished.
        # An acknowledgement, a partial fill or a late fill of a finished order changes
        # neither (a fill's settlement is followed by the settlement's handler), so those
        # reports (half of all) skip the rebalance's lock and counts.
        after_order_change(uow, uuid.UUID(order.recommendation_id), order.account_id)
    return outcome


# --------------------------------------------------------------------------- waves and status
def after_order_change(
    uow: UnitOfWork, recommendation_id: uuid.UUID, account_id: str | None = None
) -> None:
    """Send the buy wave once the sells are done and settled; refresh the rebalance status.

    Locks first (account, then rebalance: the order every handler uses), then reads: an
    execution report and a settlement handled concurrently for the same rebalance are
    serialized here, so the later one sees the earlier one's commit and the buy wave can never
    be left waiting because each saw the other's change uncommitted. ``account_id``, the
    recommendation's account when the caller knows it (the order's), saves looking it up: the
    rebalance is then locked with the same statement that finds it.
    """
    reb = None
    if account_id is not None:
        uow.accounts.lock(account_id)  # held already by a report or settlement: no query
        reb = uow.rebalancing.locked_rebalance_of(recommendation_id, account_id)
    if reb is None:
        account_id, rebalance_id = uow.rebalancing.recommendation_owner(recommendation_id)
        uow.accounts.lock(account_id)
        reb = uow.rebalancing.get_rebalance(rebalance_id, lock=True)
    owner: str = reb.account_id
    # counted in the database: loading every order of the rebalance after each of its
    # execution reports and settlements cost a time growing with its size squared
    tally = uow.rebalancing.order_tally(recommendation_id)
    executions = execution_repo(uow)
    if tally.buys_may_go and not executions.unsettled_fills(
        recommendation_id, wave=0, side=Side.SELL
    ):
        waiting = [order_from_row(r) for r in uow.rebalancing.held_buys(recommendation_id)]
        release_buy_wave(uow, owner, waiting)
        tally = uow.rebalancing.order_tally(recommendation_id)
    status = rebalance_status(uow, recommendation_id, tally)
    if status != reb.status and reb.status not in REBALANCE_TERMINAL:
        uow.rebalancing.set_rebalance_status(reb.id, status)
        uow.publish(
            _status_event(uow, StatusEntity.REBALANCE, str(reb.id), owner, status, reb.status)
        )


def release_buy_wave(uow: UnitOfWork, account_id: str, waiting: list[Order]) -> None:
    """Send the held buys of one account as single orders, sized to buying power.

    A release driven by the account's own settlements happens in that settlement's
    transaction, alone: it is never held back to be blocked with other accounts' buys (see
    :func:`size_buy_wave` and docs/execution.md).
    """
    send_orders(uow, size_buy_wave(uow, account_id, waiting))


def size_buy_wave(uow: UnitOfWork, account_id: str, waiting: list[Order]) -> list[Order]:
    """Size the held buys of one account to buying power (good-faith guard for cash accounts);
    returns those left to send (no commit, nothing sent).

    Buying power is settled cash minus the cost of buy fills not yet settled
    (:func:`~rebalancer.domain.settlement.buying_power`); unsettled sale proceeds never count.
    Buys are priced at their limit, or at arrival plus
    :data:`~rebalancer.domain.execution.GOOD_FAITH_MARKET_BUFFER_BPS` for market orders. A buy
    that must shrink keeps the recommended quantity in ``requested_quantity``; one that shrinks
    to nothing is cancelled with the reason.
    """
    account = uow.accounts.get(account_id, lock=True)
    # unsettled purchases (kept in cash_balances) reduce buying power; proceeds never add
    owed, _ = CoordinationRepository(uow.conn, uow.tenant_id).refresh_unsettled(account_id)
    power = buying_power(account.cash, [(Decimal(1), owed)])
    lots = uow.instruments.get_many([o.instrument for o in waiting])
    fresh = []
    for o in waiting:  # re-read under lock: a concurrent handler may have sent it already
        current = order_from_row(uow.rebalancing.get_order(uuid.UUID(o.order_id), lock=True))
        if current.status == OrderStatus.NEW:
            fresh.append(current)
    buffer = 1 + GOOD_FAITH_MARKET_BUFFER_BPS / Decimal(10_000)
    sized = size_buys(
        [
            BuyToSize(
                o.order_id,
                o.quantity,
                o.limit_price or (o.arrival_price or Decimal(0)) * buffer,
                lots[o.instrument].lot_size if o.instrument in lots else 1,
            )
            for o in fresh
        ],
        power,
    )
    released: list[Order] = []
    for o in fresh:
        qty = sized[o.order_id]
        oid = uuid.UUID(o.order_id)
        if qty <= 0:
            reason = f"good-faith guard: settled buying power {power:.2f} covers no shares"
            transition(o, OrderStatus.CANCELLED)
            uow.rebalancing.update_order(oid, status=str(o.status), reason=reason)
            uow.publish(order_status_event(uow, o, OrderStatus.NEW, reason))
            continue
        if qty < o.quantity:
            reason = (
                f"good-faith guard: resized from {o.quantity} to {qty} shares to fit settled "
                f"buying power {power:.2f}"
            )
            uow.rebalancing.update_order(oid, quantity=qty, reason=reason)
            o.quantity = qty
        released.append(o)
    return released


def rebalance_status(uow: UnitOfWork, recommendation_id: uuid.UUID, tally: OrderTally) -> str:
    """The status of the rebalance of ``recommendation_id`` whose orders count ``tally``, held
    at ``trading`` until every fill has a settlement outcome.

    A failed settlement, or an order resized by the good-faith guard, caps the result at
    ``partially_complete`` (a failed settlement also raises its alert). The orders and the
    settlement outcomes are counted in the database: reading every order, fill and settlement
    of the rebalance after each of its reports and settlements cost a time growing with its
    size squared.
    """
    derived = status_from_tally(tally)
    if not derived.terminal or derived == RebalanceStatus.NO_TRADE:
        return str(derived)
    executions = execution_repo(uow)
    if executions.unsettled_fills(recommendation_id):
        return str(RebalanceStatus.TRADING)
    if derived == RebalanceStatus.COMPLETE and (
        tally.resized or executions.failed_settlements(recommendation_id)
    ):
        return str(RebalanceStatus.PARTIALLY_COMPLETE)
    return str(derived)
