"""Order timeouts: re-send orders the venue never acknowledged, then give up with a reason.

An order (or block order) is *unacknowledged* while the venue has sent no report at all about
it. :func:`sweep_timeouts` looks at those whose last send is older than ``timeout``:

1. while ``send_attempts < max_sends``: publish the same ``order_placed`` again (same order
   id, so the venue deduplicates it) and stamp a new send time. Each re-send waits twice as
   long as the one before (``timeout``, then ``2 * timeout``, ``4 * timeout``, at most
   ``8 * timeout``; :func:`resend_wait`): when acknowledgements are late because our own
   consumers lag behind the venue's reports, every duplicate the venue answers adds reports to
   that backlog, and re-sending at a fixed pace fed it (the demo re-sent 800 times for 697
   orders);
2. then: request a cancel (``cancel_requested``, reason given) so that a venue that did get it
   stops working it;
3. when the cancel request is also unanswered after ``timeout``: ``expired`` with the reason
   (the venue never answered; nothing traded as far as we know; a later report is still
   recorded as late).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rebalancer.adapters import orm
from rebalancer.adapters.repositories.execution import block_from_row
from rebalancer.adapters.repositories.rebalancing import order_from_row
from rebalancer.domain.execution import BLOCK_ACCOUNT_ID
from rebalancer.domain.orders import Order, OrderStatus, transition
from rebalancer.service_layer.handlers.blocks import block_placed_event
from rebalancer.service_layer.handlers.dispatch import (
    after_order_change,
    cancel_event,
    execution_repo,
    order_status_event,
    placed_event,
)
from rebalancer.service_layer.unit_of_work import UnitOfWork

DEFAULT_MAX_SENDS = 3
"""Sends (the first one included) before an unacknowledged order is given up."""

_MAX_DOUBLINGS = 3
"""A send waits at most ``2**3 = 8`` timeouts for its acknowledgement."""


def resend_wait(timeout: timedelta, sends: int) -> timedelta:
    """How long an order sent ``sends`` times (>= 1) waits after its last send before the
    sweeper acts again: ``timeout`` after the first send, doubling with each send after it, at
    most ``8 * timeout``. A cancel request is judged after one plain ``timeout``."""
    return timeout * (1 << min(max(sends - 1, 0), _MAX_DOUBLINGS))


@dataclass
class SweepResult:
    """What one sweep did (order or block ids)."""

    resent: list[str] = field(default_factory=list)
    cancel_requested: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)


def sweep_timeouts(
    uow: UnitOfWork,
    now: datetime,
    timeout: timedelta,
    *,
    max_sends: int = DEFAULT_MAX_SENDS,
) -> SweepResult:
    """Re-send, cancel or expire unacknowledged orders and blocks of the tenant (commits once).

    Parameters
    ----------
    now
        Current time (timezone-aware); a row is due once its last send is older than
        ``now - resend_wait(timeout, send_attempts)`` (a cancel request: ``now - timeout``).
    timeout
        How long the venue has to answer the first send.
    max_sends
        Sends before giving up (>= 1).
    """
    repo = execution_repo(uow)
    result = SweepResult()
    cutoff = now - timeout
    for row in repo.unacknowledged(orm.orders, cutoff):
        if _due(row, now, timeout):
            _handle(uow, row, order_from_row(row), orm.orders, max_sends, timeout, result)
    for row in repo.unacknowledged(orm.block_orders, cutoff):
        if _due(row, now, timeout):
            _handle(uow, row, block_from_row(row), orm.block_orders, max_sends, timeout, result)
    uow.commit()
    return result


def _due(row: Any, now: datetime, timeout: timedelta) -> bool:
    """Whether the sweeper acts on ``row`` now (the query returned every row whose last send
    is older than one ``timeout``)."""
    if row.status == str(OrderStatus.CANCEL_REQUESTED):
        return True
    return bool(row.sent_at < now - resend_wait(timeout, row.send_attempts))


def _handle(
    uow: UnitOfWork,
    row: Any,
    order: Order,
    table: Any,
    max_sends: int,
    timeout: timedelta,
    result: SweepResult,
) -> None:
    repo = execution_repo(uow)
    oid = row.id
    is_block = table is orm.block_orders
    if order.status == OrderStatus.SENT and row.send_attempts < max_sends:
        uow.publish(block_placed_event(uow, row) if is_block else placed_event(uow, order))
        repo.mark_sent(table, oid)
        result.resent.append(str(oid))
        return
    if order.status == OrderStatus.SENT:
        reason = (
            f"no acknowledgement from the venue after {row.send_attempts} sends "
            f"(waiting {timeout.total_seconds():.0f} s after the first, twice as long after "
            "each next); cancel requested"
        )
        transition(order, OrderStatus.CANCEL_REQUESTED)
        account = BLOCK_ACCOUNT_ID if is_block else order.account_id
        uow.publish(cancel_event(uow, order.order_id, account, reason))
        repo.mark_sent(table, oid)
        result.cancel_requested.append(str(oid))
    else:
        reason = "the venue answered neither the order nor its cancel request; expired"
        transition(order, OrderStatus.EXPIRED)
        result.expired.append(str(oid))
    if is_block:
        repo.update_block(oid, status=str(order.status), reason=reason)
        children = [uuid.UUID(c["order_id"]) for c in row.children]
    else:
        children = [oid]
    recs: set[uuid.UUID] = set()
    for cid in children:
        child_row = uow.rebalancing.get_order(cid, lock=True)
        child = order_from_row(child_row)
        before = child.status
        if child.status.terminal or child.status == order.status:
            continue
        transition(child, order.status)
        uow.rebalancing.update_order(cid, status=str(child.status), reason=reason)
        uow.publish(order_status_event(uow, child, before, reason))
        recs.add(uuid.UUID(child.recommendation_id))
    for rid in sorted(recs, key=str):
        after_order_change(uow, rid)
