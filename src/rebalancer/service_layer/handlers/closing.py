"""Closing the loop: a rebalance that ended partly done is re-optimized from the new state.

The old orders are never re-sent. Once a rebalance is ``partially_complete`` (or ``failed``),
every fill of it has a settlement outcome (the status is held at ``trading`` until then), so
the account's lots and settled cash already reflect what traded. A *follow-up* rebalance
(reason ``remainder_of:<rebalance id>``, ``parent_rebalance_id`` = the rebalance) asks the
optimizer for a fresh recommendation from that state, which then needs its own approval.

Two ways in:

- **automatic** (:func:`on_status_updated`, the ``status_updated`` event handler): when a
  rebalance that traded reaches ``partially_complete`` or ``failed``, the follow-up is opened
  and a ``rebalance_triggered`` event is added to the outbox in the same transaction; a worker
  then recommends it (the ordinary ``rebalance_triggered`` handler). At most
  ``max_remainder_rounds`` follow-ups chain from one original rebalance (setting
  ``REBALANCER_MAX_REMAINDER_ROUNDS``, default 1; 0 turns the automatic path off). Skipped,
  with an audit record, when another rebalance of the account is already in flight (that one
  starts from the new state anyway);
- **explicit** (:func:`reoptimize_remainder`, ``POST /v1/rebalances/{id}/reoptimize``): opens
  the follow-up (whatever the round limit: a person asked) and recommends it at once.

Either way a rebalance has at most one follow-up: the unique constraint on
``rebalances.parent_rebalance_id`` decides, and both paths return the existing one.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from prometheus_client import Counter

from rebalancer.adapters.repositories.coordination import CoordinationRepository
from rebalancer.contracts import (
    EventType,
    RebalanceTriggeredV1,
    StatusEntity,
    StatusUpdatedV1,
    new_event,
)
from rebalancer.domain.errors import Conflict, NotFound
from rebalancer.domain.rebalance import RebalanceStatus
from rebalancer.service_layer.handlers.recommending import Optimizer, _status_event, recommend
from rebalancer.service_layer.unit_of_work import UnitOfWork

REMAINDER_REASON = "remainder_of:{rebalance_id}"
"""Reason of a follow-up rebalance; the link back to the rebalance it completes."""

REOPTIMIZABLE = (str(RebalanceStatus.PARTIALLY_COMPLETE), str(RebalanceStatus.FAILED))

FOLLOW_UPS = Counter(
    "rebalancer_follow_ups_total", "Follow-up rebalances opened, by path", ["path"]
)

AUTOMATIC_ACTOR = "system:closing-the-loop"
"""Actor of the audit records of the automatic path."""


def _repo(uow: UnitOfWork) -> CoordinationRepository:
    return CoordinationRepository(uow.conn, uow.tenant_id)


def _open_follow_up(uow: UnitOfWork, parent: Any) -> tuple[uuid.UUID, bool]:
    """Insert the follow-up of a locked ``parent`` row and announce it (no commit).

    Returns ``(id, created)``; an existing follow-up is returned unchanged.
    """
    repo = _repo(uow)
    existing = repo.follow_up_of(parent.id)
    if existing is not None:
        return uuid.UUID(str(existing.id)), False
    reason = REMAINDER_REASON.format(rebalance_id=parent.id)
    priority = max(int(parent.priority), 1)
    uow.accounts.lock(parent.account_id)
    new_id = repo.insert_follow_up(parent, [reason], priority)
    if new_id is None:  # lost a race past the row lock: the constraint kept it single
        row = repo.follow_up_of(parent.id)
        assert row is not None
        return uuid.UUID(str(row.id)), False
    uow.publish(
        new_event(
            EventType.REBALANCE_TRIGGERED,
            RebalanceTriggeredV1(
                account_id=parent.account_id,
                rebalance_id=str(new_id),
                reasons=[reason],
                priority=priority,
                as_of=uow.market.as_of() or date.today(),
            ),
            tenant_id=uow.tenant_id,
            key=parent.account_id,
            correlation_id=str(new_id),
        ),
        _status_event(
            uow,
            StatusEntity.REBALANCE,
            str(new_id),
            parent.account_id,
            "requested",
            None,
            reason,
        ),
    )
    return new_id, True


def reoptimize_remainder(
    uow: UnitOfWork, optimizer: Optimizer, rebalance_id: uuid.UUID
) -> uuid.UUID:
    """Open (once) the follow-up rebalance of ``rebalance_id`` and recommend it now.

    Calling it again, or after the automatic path opened it, returns the same follow-up. The
    follow-up is a normal rebalance: its recommendation waits for approval (or ends
    ``no_trade`` when the remainder is not worth trading any more, e.g. after prices moved).

    Returns
    -------
    uuid.UUID
        The follow-up rebalance id.

    Raises
    ------
    Conflict
        The rebalance is not ``partially_complete`` or ``failed`` (still trading, or complete).
    """
    account_id = uow.rebalancing.get_rebalance(rebalance_id).account_id
    uow.accounts.lock(account_id)  # account, then rebalance: every handler's order
    reb = uow.rebalancing.get_rebalance(rebalance_id, lock=True)
    if reb.status not in REOPTIMIZABLE:
        raise Conflict(
            f"rebalance {rebalance_id} is {reb.status}; only a partially_complete or failed "
            "rebalance has a remainder to re-optimize",
            ["rebalance_id"],
        )
    new_id, created = _open_follow_up(uow, reb)
    if created:  # recommend now (commits); the worker's copy of the trigger is then a no-op
        FOLLOW_UPS.labels("explicit").inc()
        recommend(uow, optimizer, new_id)
    uow.commit()
    return new_id


def acts_on(event: StatusUpdatedV1, *, max_rounds: int) -> bool:
    """Whether :func:`on_status_updated` could act on ``event`` (no database needed).

    Most status events (orders, settlements, other rebalance statuses) cannot; the consumer
    drops them before opening a transaction, which keeps the status topic cheap to consume.
    """
    return (
        max_rounds > 0 and event.entity == StatusEntity.REBALANCE and event.status in REOPTIMIZABLE
    )


def on_status_updated(
    uow: UnitOfWork, event: StatusUpdatedV1, *, max_rounds: int
) -> uuid.UUID | None:
    """Event handler of ``status_updated``: open the follow-up of a partly done rebalance.

    Acts only on a rebalance that is (still) ``partially_complete`` or ``failed``, had orders,
    and whose round (0 for an original rebalance, parent's + 1 for a follow-up) is below
    ``max_rounds``. The follow-up row and its ``rebalance_triggered`` event are written in
    the caller's transaction (outbox); the consumer's ``processed_events`` mark makes a
    redelivered event a no-op, and the unique parent link makes a second follow-up
    impossible anyway. No commit here.

    Returns
    -------
    uuid.UUID or None
        The follow-up opened now, or None when nothing was done.
    """
    if not acts_on(event, max_rounds=max_rounds):
        return None
    try:
        rid = uuid.UUID(event.entity_id)
        uow.accounts.lock(event.account_id)  # account, then rebalance (no deadlock)
        reb = uow.rebalancing.get_rebalance(rid, lock=True)
    except (ValueError, NotFound):
        return None
    if reb.account_id != event.account_id:
        return None
    repo = _repo(uow)
    if (
        reb.status not in REOPTIMIZABLE
        or int(reb.remainder_round) >= max_rounds
        or not repo.rebalance_traded(rid)
    ):
        return None
    if repo.follow_up_of(rid) is not None:
        return None
    busy = repo.other_open_rebalance(reb.account_id, rid)
    if busy is not None:
        uow.audit.record(
            AUTOMATIC_ACTOR,
            "follow_up_skipped",
            "rebalance",
            str(rid),
            {"reason": f"rebalance {busy.id} of the account is {busy.status}"},
        )
        return None
    new_id, created = _open_follow_up(uow, reb)
    if created:
        FOLLOW_UPS.labels("automatic").inc()
        uow.audit.record(
            AUTOMATIC_ACTOR,
            "follow_up",
            "rebalance",
            str(rid),
            {"follow_up": str(new_id), "round": int(reb.remainder_round) + 1},
        )
    return new_id if created else None


def follow_up_links(uow: UnitOfWork, rebalance: Any) -> dict[str, Any]:
    """``parent_rebalance_id``, ``remainder_round`` and ``follow_up_rebalance_id`` of a
    rebalance row (for ``GET /v1/rebalances/{id}``)."""
    follow = _repo(uow).follow_up_of(rebalance.id)
    return {
        "parent_rebalance_id": rebalance.parent_rebalance_id,
        "remainder_round": int(rebalance.remainder_round),
        "follow_up_rebalance_id": None if follow is None else follow.id,
    }
