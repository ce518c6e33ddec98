"""Approval turns recommendations into orders (exactly once; several at once as block orders);
execution reports move orders through their state machine; cancels go to the venue.

Good-faith guard
----------------
Every account is treated as a cash account: buys are paid with settled cash only. At approval
the buying power is settled cash minus unsettled buy fills
(:func:`~rebalancer.domain.settlement.buying_power`); buys that do not fit it wait in wave 1
until the sells of wave 0 are finished *and settled*, and are then sized to the buying power
of that moment (see :func:`~rebalancer.service_layer.handlers.dispatch.release_buy_wave`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from rebalancer.adapters.repositories.coordination import CoordinationRepository
from rebalancer.adapters.repositories.rebalancing import order_from_row, order_values
from rebalancer.contracts import ExecutionReportV1, StatusEntity
from rebalancer.domain.errors import Conflict, InvalidInput, NotFound
from rebalancer.domain.execution import GOOD_FAITH_MARKET_BUFFER_BPS, ExecutionPolicy
from rebalancer.domain.orders import (
    Order,
    OrderStatus,
    ReportOutcome,
    Side,
    Trade,
    generate_orders,
    request_cancel,
)
from rebalancer.domain.rebalance import RebalanceStatus
from rebalancer.domain.rebalance import reject as reject_rebalance
from rebalancer.domain.settlement import buying_power
from rebalancer.service_layer.handlers.blocks import apply_block_report, send_blocks
from rebalancer.service_layer.handlers.dispatch import (
    REPORTS,
    after_order_change,
    apply_to_order,
    cancel_event,
    execution_record,
    execution_repo,
    order_status_event,
    send_orders,
    size_buy_wave,
)
from rebalancer.service_layer.handlers.recommending import _status_event
from rebalancer.service_layer.unit_of_work import UnitOfWork

_after_order_change = after_order_change  # used by handlers.settling


def _trades_from_analysis(
    analysis: dict[str, Any], request: dict[str, Any]
) -> tuple[list[Trade], dict[str, float]]:
    prices = {i["id"]: Decimal(str(i["price"])) for i in request["instruments"]}
    trades, costs = [], {}
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
        if t.get("cost_bps") is not None:
            costs[t["instrument"]] = float(t["cost_bps"])
    return trades, costs


def _create_orders(
    uow: UnitOfWork, recommendation_id: uuid.UUID, actor: str, policy: ExecutionPolicy
) -> list[Order] | None:
    """Approve one recommendation and insert its orders (not sent, no commit).

    Returns the new orders, or ``None`` when it was approved before.
    """
    rec = uow.rebalancing.get_recommendation(recommendation_id, lock=True)
    if rec.status == "approved":
        return None
    if rec.status != "pending_approval":
        raise Conflict(
            f"recommendation {rec.id} is {rec.status}; only a pending_approval one can be approved",
            ["recommendation_id"],
        )
    account = uow.accounts.get(rec.account_id, lock=True)
    trades, costs = _trades_from_analysis(rec.response, rec.request)
    if not trades:
        raise InvalidInput("the recommendation has no trades to approve", ["recommendation_id"])
    # unsettled purchases (kept in cash_balances) reduce buying power; proceeds never add
    owed, _ = CoordinationRepository(uow.conn, uow.tenant_id).refresh_unsettled(account.id)
    power = buying_power(account.cash, [(Decimal(1), owed)])
    orders = generate_orders(
        str(rec.id),
        account.id,
        trades,
        cash=power / (1 + GOOD_FAITH_MARKET_BUFFER_BPS / Decimal(10_000)),
        limit_offset_bps=policy.limit_offset_bps,
        tif=policy.time_in_force,
    )
    uow.rebalancing.insert_orders(
        [
            {
                **order_values(o),
                "requested_quantity": o.quantity,
                "estimated_cost_bps": costs.get(o.instrument),
            }
            for o in orders
        ]
    )
    uow.rebalancing.set_recommendation_status(rec.id, "approved", approved_by=actor)
    uow.rebalancing.set_rebalance_status(rec.rebalance_id, "trading")
    uow.audit.record(
        actor,
        "approve",
        "recommendation",
        str(rec.id),
        {"orders": len(orders), "account_id": account.id, "buying_power": str(power)},
    )
    uow.publish(
        _status_event(
            uow, StatusEntity.REBALANCE, str(rec.rebalance_id), account.id, "trading", rec.status
        )
    )
    return orders


def approve(
    uow: UnitOfWork,
    recommendation_id: uuid.UUID,
    actor: str,
    *,
    execution: ExecutionPolicy | None = None,
) -> list[dict[str, Any]]:
    """Approve a recommendation and create its orders, exactly once.

    Approving an already approved recommendation returns its orders and creates nothing. The
    recommendation's row lock and the unique key (recommendation, account, instrument) on
    orders make a second set impossible even under concurrent approvals or retries. Wave-0
    orders are sent at once; wave-1 buys wait for settled sale proceeds (module docstring).

    Parameters
    ----------
    execution
        Market or limit orders and time in force (default: market, day).

    Raises
    ------
    Conflict
        The recommendation is a ``no_trade`` decision or was rejected/superseded.
    """
    orders = _create_orders(uow, recommendation_id, actor, execution or ExecutionPolicy())
    if orders is not None:
        send_orders(uow, [order for order in orders if order.wave == 0])
        send_orders(uow, _release_unblocked_buys(uow, orders))
        after_order_change(uow, recommendation_id)  # a buy sized to nothing may end it
        uow.commit()
    return [order_view(r) for r in _orders_now(uow, [recommendation_id])]


def reject(uow: UnitOfWork, recommendation_id: uuid.UUID, actor: str, reason: str) -> str:
    """Reject a recommendation pending approval: it will never trade (commits).

    Its rebalance becomes ``rejected`` (finished: the account's next trigger or batch opens a
    new rebalance from its state then), with a ``status_updated`` event whose ``detail`` is
    ``reason`` and an audit record. Rejecting a rejected recommendation changes nothing.
    Returns the recommendation's status (``rejected``).

    Raises
    ------
    NotFound
        The recommendation is not the tenant's.
    Conflict
        It was approved (cancel its orders instead) or is a ``no_trade`` decision.
    """
    rec = uow.rebalancing.get_recommendation(recommendation_id, lock=True)
    if rec.status == str(RebalanceStatus.REJECTED):
        return str(rec.status)
    if rec.status != str(RebalanceStatus.PENDING_APPROVAL):
        raise Conflict(
            f"recommendation {rec.id} is {rec.status}; only a pending_approval one can be "
            "rejected (cancel the orders of an approved one instead)",
            ["recommendation_id"],
        )
    uow.accounts.lock(rec.account_id)  # as every change of the account's open rebalance
    reb = uow.rebalancing.get_rebalance(rec.rebalance_id, lock=True)
    status = str(reject_rebalance(RebalanceStatus(reb.status)))
    uow.rebalancing.set_recommendation_status(rec.id, status)
    uow.rebalancing.set_rebalance_status(rec.rebalance_id, status)
    uow.audit.record(
        actor,
        "reject",
        "recommendation",
        str(rec.id),
        {"account_id": rec.account_id, "reason": reason},
    )
    uow.publish(
        _status_event(
            uow,
            StatusEntity.REBALANCE,
            str(rec.rebalance_id),
            rec.account_id,
            status,
            reb.status,
            reason,
            correlation_id=str(rec.id),
        )
    )
    uow.commit()
    return status


def approve_many(
    uow: UnitOfWork,
    recommendation_ids: Sequence[uuid.UUID],
    actor: str,
    *,
    execution: ExecutionPolicy | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Approve several recommendations in one transaction, trading shared instruments as blocks.

    First-wave orders of the same instrument and side in two or more accounts go to the venue
    as one block order whose fills are allocated back pro rata
    (:mod:`~rebalancer.service_layer.handlers.blocks`). Recommendations already approved keep
    their orders. Returns ``recommendation id -> its orders``.

    Raises
    ------
    Conflict, NotFound
        For the first recommendation that cannot be approved; nothing is approved then.
    """
    ids = sorted(set(recommendation_ids), key=str)
    approve_all(uow, ids, actor, execution=execution)
    rows = _orders_now(uow, ids)
    return {str(rid): [order_view(r) for r in rows if r.recommendation_id == rid] for rid in ids}


def approve_all(
    uow: UnitOfWork,
    recommendation_ids: Sequence[uuid.UUID],
    actor: str,
    *,
    execution: ExecutionPolicy | None = None,
) -> list[Order]:
    """:func:`approve_many` without reading the orders back: approves, sends (shared
    instruments as blocks), commits, and returns the orders created now (none for those
    approved before)."""
    policy = execution or ExecutionPolicy()
    ids = sorted(set(recommendation_ids), key=str)  # one lock order: no deadlocks
    if not ids:
        raise InvalidInput("no recommendation ids given", ["recommendation_ids"])
    new: list[Order] = []
    for rid in ids:
        new += _create_orders(uow, rid, actor, policy) or []
    released = _release_unblocked_buys(uow, new)
    send_blocks(uow, [o for o in new if o.wave == 0] + released, policy)
    for rid in sorted({uuid.UUID(o.recommendation_id) for o in released}, key=str):
        after_order_change(uow, rid)
    uow.commit()
    return new


def _release_unblocked_buys(uow: UnitOfWork, orders: Sequence[Order]) -> list[Order]:
    """Held buys (wave 1) of recommendations with no sells to wait for, sized to buying power
    now (:func:`~rebalancer.service_layer.handlers.dispatch.size_buy_wave`); not sent.

    In ``approve_many`` they go to :func:`send_blocks` with the first wave, so several
    accounts' buys of one instrument released together trade as one block (same rules).
    """
    by_rec: dict[str, list[Order]] = {}
    for o in orders:
        by_rec.setdefault(o.recommendation_id, []).append(o)
    released: list[Order] = []
    for members in by_rec.values():
        if all(o.wave == 1 for o in members):
            released += size_buy_wave(uow, members[0].account_id, members)
    return released


def _orders_now(uow: UnitOfWork, recommendation_ids: Sequence[uuid.UUID]) -> list[Any]:
    with UnitOfWork(uow.engine, uow.tenant_id) as fresh:
        return [
            r
            for rid in recommendation_ids
            for r in fresh.rebalancing.orders(recommendation_id=rid, limit=None)
        ]


def apply_execution_report(uow: UnitOfWork, event: ExecutionReportV1) -> ReportOutcome:
    """Apply one venue report to its order or block order (once); refresh the rebalance status.

    A report for an unknown order is recorded with outcome ``rejected_unknown`` and changes
    nothing; a repeated report id is a ``duplicate``; a report after the order finished
    (a fill after a cancel) is ``ignored_late`` (its shares are still recorded and settle).
    """
    try:
        oid: uuid.UUID | None = uuid.UUID(event.order_id)
    except ValueError:
        oid = None
    # The account first, as every handler of an account locks it (found and locked by one
    # statement): locking the order, then the account's cash row (unsettled totals), then the
    # account deadlocked with a settlement of the same account, which holds the account and
    # updates its cash (27 deadlocks in one demo run, each a second lost and a retry).
    owner = uow.accounts.lock_owner_of_order(oid) if oid is not None else None
    if oid is not None and owner is not None:
        row = uow.rebalancing.get_order(oid, lock=True)
        outcome = apply_to_order(uow, row, event)
    else:
        try:
            block = execution_repo(uow).get_block(uuid.UUID(event.order_id), lock=True)
        except (ValueError, NotFound):
            uow.rebalancing.add_execution(
                {
                    **execution_record(event),
                    "order_id": None,
                    "outcome": str(ReportOutcome.REJECTED_UNKNOWN),
                }
            )
            REPORTS.labels(str(ReportOutcome.REJECTED_UNKNOWN)).inc()
            uow.commit()
            return ReportOutcome.REJECTED_UNKNOWN
        outcome = apply_block_report(uow, block, event)
    uow.commit()
    return outcome


def cancel_order(uow: UnitOfWork, order_id: uuid.UUID, actor: str, reason: str) -> dict[str, Any]:
    """Ask the venue to cancel a working order (a never-sent order is cancelled at once).

    Raises
    ------
    Conflict
        The order is finished, or it works inside a block order (the venue knows the block,
        not the account's share: cancel the block).
    """
    row = uow.rebalancing.get_order(order_id, lock=True)
    order = order_from_row(row)
    previous = order.status
    if order.status.terminal:
        raise Conflict(f"order {order_id} is already {order.status}", ["order_id"])
    if row.block_id is not None and order.status != OrderStatus.NEW:
        raise Conflict(
            f"order {order_id} works inside block order {row.block_id}: the venue knows the "
            f"block, not this account's share; cancel the whole block with "
            f"POST /v1/blocks/{row.block_id}/cancel",
            ["order_id"],
        )
    request_cancel(order)
    uow.rebalancing.update_order(order_id, status=str(order.status), reason=reason)
    if order.status == OrderStatus.CANCEL_REQUESTED:
        uow.publish(cancel_event(uow, order.order_id, order.account_id, reason))
    uow.publish(order_status_event(uow, order, previous, reason))
    uow.audit.record(actor, "cancel", "order", str(order_id), {"reason": reason})
    after_order_change(uow, uuid.UUID(order.recommendation_id))
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
