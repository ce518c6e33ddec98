"""Block orders: one venue order per instrument and side across accounts, its fills allocated
back to the accounts' orders pro rata.

Flow
----
:func:`send_blocks` groups the first-wave orders of several approvals by ``(instrument,
side)``; a group of two or more accounts becomes a block (id
:func:`~rebalancer.domain.execution.block_id_for` its children, so a retry cannot create a
second one) sent to the venue under :data:`~rebalancer.domain.execution.BLOCK_ACCOUNT_ID`.
Each venue report on the block goes through the order state machine of the block itself
(duplicates, reordering, overfills, late fills) and then fans out to the children as derived
reports with ids ``{venue_report_id}/{child_order_id}``:

- a fill's shares are allocated with
  :func:`~rebalancer.domain.execution.allocate_increment` (pro rata to what each child still
  needs, whole lots, exact sum) at that fill's price, and the child fill reports are also
  published on the execution-report topic so that the custodian settles each account's share
  (the service ignores its own copies: same report ids);
- ack, cancel, expiry, reject and cancel-reject reach every child unchanged.

:func:`cancel_block` (``POST /v1/blocks/{id}/cancel``) sends one cancel for the block and
moves its working children to ``cancel_requested``; the venue's answer on the block then
reaches them like any report (fills that arrive before the cancel are still allocated).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from rebalancer.adapters import orm
from rebalancer.adapters.repositories.execution import block_from_row, block_values
from rebalancer.adapters.repositories.rebalancing import order_from_row
from rebalancer.contracts import EventType, ExecutionReportV1, ReportKind, new_event
from rebalancer.domain.errors import Conflict, IllegalTransition, InvalidInput
from rebalancer.domain.execution import (
    BLOCK_ACCOUNT_ID,
    ExecutionPolicy,
    allocate_increment,
    block_id_for,
)
from rebalancer.domain.orders import (
    ZERO,
    BlockChild,
    Order,
    OrderStatus,
    ReportOutcome,
    apply_report,
    limit_price_for,
    request_cancel,
)
from rebalancer.service_layer.handlers.dispatch import (
    REPORTS,
    after_order_change,
    apply_to_order,
    cancel_event,
    domain_report,
    execution_record,
    execution_repo,
    order_status_event,
    placed_event,
    send_order,
    send_orders,
)
from rebalancer.service_layer.unit_of_work import UnitOfWork


def send_blocks(uow: UnitOfWork, orders: Sequence[Order], policy: ExecutionPolicy) -> list[str]:
    """Send new ``orders`` released together (the first wave, plus held buys that have nothing
    to wait for): blocks for instruments and sides shared by several accounts, single orders
    otherwise. Returns the ids of the blocks sent (no commit)."""
    groups: dict[tuple[str, str], list[Order]] = {}
    for o in orders:
        if o.status == OrderStatus.NEW:
            groups.setdefault((o.instrument, str(o.side)), []).append(o)
    blocks = []
    for (_, _), members in sorted(groups.items()):
        if len({o.account_id for o in members}) < 2:
            send_orders(uow, members)
            continue
        blocks.append(_send_block(uow, members, policy))
    return blocks


def _send_block(uow: UnitOfWork, members: list[Order], policy: ExecutionPolicy) -> str:
    members = sorted(members, key=lambda o: (o.account_id, o.order_id))
    block_id = block_id_for([o.order_id for o in members])
    qty = sum((o.quantity for o in members), ZERO)
    priced = [o for o in members if o.arrival_price]
    arrival = (
        sum((o.quantity * (o.arrival_price or ZERO) for o in priced), ZERO)
        / sum((o.quantity for o in priced), ZERO)
        if priced
        else None
    )
    first = members[0]
    limit = None
    if policy.limit_offset_bps is not None and arrival is not None:
        limit = limit_price_for(first.side, arrival, policy.limit_offset_bps)
    block = Order(
        order_id=block_id,
        recommendation_id=block_id,
        account_id=BLOCK_ACCOUNT_ID,
        instrument=first.instrument,
        side=first.side,
        quantity=qty,
        limit_price=limit,
        arrival_price=arrival.quantize(Decimal("0.000001")) if arrival is not None else None,
        tif=policy.time_in_force,
        status=OrderStatus.SENT,
    )
    repo = execution_repo(uow)
    bid = uuid.UUID(block_id)
    repo.insert_block(
        {
            "id": bid,
            "instrument": block.instrument,
            "side": str(block.side),
            "quantity": qty,
            "status": str(OrderStatus.SENT),
            "limit_price": limit,
            "time_in_force": str(policy.time_in_force),
            "arrival_price": block.arrival_price,
            "children": [
                {"order_id": o.order_id, "account_id": o.account_id, "quantity": str(o.quantity)}
                for o in members
            ],
        }
    )
    repo.mark_sent(orm.block_orders, bid)
    for o in members:
        uow.rebalancing.update_order(uuid.UUID(o.order_id), block_id=bid)
        send_order(uow, o, via_block=True)
    uow.publish(placed_event(uow, block, account_key=BLOCK_ACCOUNT_ID))
    return block_id


def block_placed_event(uow: UnitOfWork, row: Any) -> Any:
    """The ``order_placed`` event of a stored block (for a re-send)."""
    return placed_event(uow, block_from_row(row), account_key=BLOCK_ACCOUNT_ID)


def _children(row: Any) -> list[BlockChild]:
    return [
        BlockChild(c["order_id"], c["account_id"], Decimal(str(c["quantity"])))
        for c in row.children
    ]


def apply_block_report(uow: UnitOfWork, row: Any, event: ExecutionReportV1) -> ReportOutcome:
    """Apply a venue report on a block (locked row) and fan it out to the children; no commit."""
    block = block_from_row(row)
    record = {**execution_record(event), "order_id": row.id}
    try:
        outcome = apply_report(block, domain_report(event))
    except (IllegalTransition, InvalidInput) as exc:
        uow.rebalancing.add_execution({**record, "outcome": f"refused: {exc.detail}"[:500]})
        REPORTS.labels("refused").inc()
        return ReportOutcome.IGNORED_LATE
    if not uow.rebalancing.add_execution({**record, "outcome": str(outcome)}):
        REPORTS.labels("duplicate").inc()
        return ReportOutcome.DUPLICATE
    REPORTS.labels(str(outcome)).inc()
    if outcome not in (ReportOutcome.APPLIED, ReportOutcome.IGNORED_LATE):
        return outcome
    children = _children(row)
    allocated = {k: Decimal(str(v)) for k, v in (row.allocated or {}).items()}
    derived: list[tuple[BlockChild, ExecutionReportV1]] = []
    if event.kind.is_fill and event.fill_quantity > 0:
        lot = uow.instruments.get(row.instrument).lot_size
        shares = allocate_increment(
            str(row.id),
            row.instrument,
            block.side,
            children,
            allocated,
            event.fill_quantity,
            lot,
        )
        for c in children:
            if c.order_id not in shares:
                continue
            allocated[c.order_id] = allocated.get(c.order_id, ZERO) + shares[c.order_id]
            kind = (
                ReportKind.FILL if allocated[c.order_id] == c.quantity else ReportKind.PARTIAL_FILL
            )
            derived.append((c, _child_report(event, c, kind, shares[c.order_id], allocated)))
    elif not event.kind.is_fill:
        derived = [(c, _child_report(event, c, event.kind, ZERO, allocated)) for c in children]
    values = block_values(block)
    if event.kind in (ReportKind.REJECTED, ReportKind.EXPIRED, ReportKind.CANCELLED):
        values["reason"] = event.reason
    execution_repo(uow).update_block(
        row.id, allocated={k: str(v) for k, v in allocated.items()}, **values
    )
    # the children's accounts before their orders and cash rows, in one order (see
    # trading.apply_execution_report: settlements lock the account, then its cash)
    for account_id in sorted({c.account_id for c, _ in derived}):
        uow.accounts.lock(account_id)
    for c, child in derived:
        if child.kind.is_fill:  # the custodian settles each account's allocation
            uow.publish(
                new_event(
                    EventType.EXECUTION_REPORT,
                    child,
                    tenant_id=uow.tenant_id,
                    key=c.account_id,
                    correlation_id=child.order_id,
                )
            )
        child_row = uow.rebalancing.get_order(uuid.UUID(c.order_id), lock=True)
        apply_to_order(uow, child_row, child)
    return outcome


def _child_report(
    event: ExecutionReportV1,
    child: BlockChild,
    kind: ReportKind,
    shares: Decimal,
    allocated: dict[str, Decimal],
) -> ExecutionReportV1:
    return ExecutionReportV1(
        report_id=f"{event.report_id}/{child.order_id}",
        order_id=child.order_id,
        account_id=child.account_id,
        instrument=event.instrument,
        side=event.side,
        kind=kind,
        fill_quantity=shares,
        fill_price=event.fill_price if shares > 0 else None,
        cumulative_quantity=allocated.get(child.order_id, ZERO),
        sequence=event.sequence,
        reason=event.reason,
        venue_time=event.venue_time,
    )


def cancel_block(uow: UnitOfWork, block_id: uuid.UUID, actor: str, reason: str) -> dict[str, Any]:
    """Ask the venue to cancel a working block order: one cancel for the block (commits).

    Every working child moves to ``cancel_requested`` (a status event each); the venue's
    ``cancelled`` (or ``cancel_rejected``, or fills that were already on their way) on the
    block then reaches the children through :func:`apply_block_report`. Asking again while
    the cancel is pending sends nothing more and returns the block.

    Raises
    ------
    NotFound
        No such block for the tenant.
    Conflict
        The block is finished (filled, cancelled, rejected or expired).
    """
    repo = execution_repo(uow)
    row = repo.get_block(block_id, lock=True)
    block = block_from_row(row)
    if block.status.terminal:
        raise Conflict(
            f"block order {block_id} is already {block.status}; nothing to cancel",
            ["block_id"],
        )
    if block.status != OrderStatus.CANCEL_REQUESTED:
        request_cancel(block)
        repo.update_block(row.id, status=str(block.status), reason=reason)
        uow.publish(cancel_event(uow, block.order_id, BLOCK_ACCOUNT_ID, reason))
        recs: set[uuid.UUID] = set()
        for c in _children(row):
            child_row = uow.rebalancing.get_order(uuid.UUID(c.order_id), lock=True)
            child = order_from_row(child_row)
            previous = child.status
            if child.status.terminal or child.status == OrderStatus.CANCEL_REQUESTED:
                continue
            request_cancel(child)
            uow.rebalancing.update_order(child_row.id, status=str(child.status), reason=reason)
            uow.publish(order_status_event(uow, child, previous, f"block cancel: {reason}"))
            recs.add(uuid.UUID(child.recommendation_id))
        uow.audit.record(
            actor,
            "cancel",
            "block_order",
            str(block_id),
            {"reason": reason, "children": len(row.children)},
        )
        for rid in sorted(recs, key=str):
            after_order_change(uow, rid)
    uow.commit()
    return block_view(uow, block_id)


def block_view(uow: UnitOfWork, block_id: uuid.UUID) -> dict[str, Any]:
    """JSON view of a block: its state, its children (orders and allocated shares) and its
    venue fills with the share each child got of each.

    Raises
    ------
    NotFound
        No such block for the tenant.
    """
    row = execution_repo(uow).get_block(block_id)
    child_ids = [uuid.UUID(c["order_id"]) for c in row.children]
    orders = {r.id: r for r in (uow.rebalancing.get_order(cid) for cid in child_ids)}
    allocated = {k: str(v) for k, v in (row.allocated or {}).items()}
    child_fills: dict[str, list[dict[str, str]]] = {}
    for e in uow.rebalancing.executions(child_ids):
        venue_report, _, _ = e.report_id.partition("/")
        if e.kind in ("fill", "partial_fill") and e.fill_quantity > 0 and "/" in e.report_id:
            child_fills.setdefault(venue_report, []).append(
                {
                    "order_id": str(e.order_id),
                    "account_id": orders[e.order_id].account_id,
                    "quantity": str(e.fill_quantity),
                }
            )
    fills = [
        {
            "report_id": e.report_id,
            "kind": e.kind,
            "quantity": str(e.fill_quantity),
            "price": None if e.fill_price is None else str(e.fill_price),
            "outcome": e.outcome,
            "venue_time": e.venue_time.isoformat(),
            "allocations": child_fills.get(e.report_id, []),
        }
        for e in uow.rebalancing.executions([row.id])
        if e.kind in ("fill", "partial_fill") and e.fill_quantity > 0
    ]
    return {
        "id": str(row.id),
        "instrument": row.instrument,
        "side": row.side,
        "quantity": str(row.quantity),
        "filled_quantity": str(row.filled_quantity),
        "avg_fill_price": None if row.avg_fill_price is None else str(row.avg_fill_price),
        "status": row.status,
        "limit_price": None if row.limit_price is None else str(row.limit_price),
        "time_in_force": row.time_in_force,
        "arrival_price": None if row.arrival_price is None else str(row.arrival_price),
        "reason": row.reason,
        "children": [
            {
                "order_id": c["order_id"],
                "account_id": c["account_id"],
                "quantity": str(c["quantity"]),
                "allocated_quantity": allocated.get(c["order_id"], "0"),
                "status": orders[uuid.UUID(c["order_id"])].status,
            }
            for c in row.children
        ],
        "fills": fills,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }
