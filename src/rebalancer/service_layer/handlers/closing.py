"""Closing the loop: a rebalance that ended partly done is re-optimized from the new state.

The old orders are never re-sent. Once a rebalance is ``partially_complete`` (or ``failed``),
every fill of it has a settlement outcome (the status is held at ``trading`` until then), so
the account's lots and settled cash already reflect what traded. :func:`reoptimize_remainder`
opens a follow-up rebalance (reason ``remainder_of:<rebalance id>``) and asks the optimizer
for a fresh recommendation from that state, which then needs its own approval.
"""

from __future__ import annotations

import uuid
from datetime import date

from rebalancer.adapters.repositories.execution import follow_up_rebalance
from rebalancer.contracts import EventType, RebalanceTriggeredV1, StatusEntity, new_event
from rebalancer.domain.errors import Conflict
from rebalancer.service_layer.handlers.recommending import Optimizer, _status_event, recommend
from rebalancer.service_layer.unit_of_work import UnitOfWork

REMAINDER_REASON = "remainder_of:{rebalance_id}"
"""Reason of a follow-up rebalance; the link back to the rebalance it completes."""

REOPTIMIZABLE = ("partially_complete", "failed")


def reoptimize_remainder(
    uow: UnitOfWork, optimizer: Optimizer, rebalance_id: uuid.UUID
) -> uuid.UUID:
    """Open (once) the follow-up rebalance of ``rebalance_id`` and recommend it now.

    Calling it again returns the same follow-up. The follow-up is a normal rebalance: its
    recommendation waits for approval (or ends ``no_trade`` when the remainder is not worth
    trading any more, e.g. after prices moved).

    Returns
    -------
    uuid.UUID
        The follow-up rebalance id.

    Raises
    ------
    Conflict
        The rebalance is not ``partially_complete`` or ``failed`` (still trading, or complete).
    """
    reb = uow.rebalancing.get_rebalance(rebalance_id, lock=True)
    if reb.status not in REOPTIMIZABLE:
        raise Conflict(
            f"rebalance {rebalance_id} is {reb.status}; only a partially_complete or failed "
            "rebalance has a remainder to re-optimize",
            ["rebalance_id"],
        )
    reason = REMAINDER_REASON.format(rebalance_id=rebalance_id)
    existing = follow_up_rebalance(uow.conn, uow.tenant_id, reason)
    if existing is not None:
        uow.commit()
        return uuid.UUID(str(existing.id))
    uow.accounts.get(reb.account_id, lock=True)
    new_id = uow.rebalancing.create_rebalance(
        reb.account_id, "requested", [reason], max(reb.priority, 1)
    )
    uow.publish(
        new_event(
            EventType.REBALANCE_TRIGGERED,
            RebalanceTriggeredV1(
                account_id=reb.account_id,
                rebalance_id=str(new_id),
                reasons=[reason],
                priority=max(reb.priority, 1),
                as_of=uow.market.as_of() or date.today(),
            ),
            tenant_id=uow.tenant_id,
            key=reb.account_id,
            correlation_id=str(new_id),
        ),
        _status_event(
            uow, StatusEntity.REBALANCE, str(new_id), reb.account_id, "requested", None, reason
        ),
    )
    recommend(uow, optimizer, new_id)  # commits (the worker's copy of the trigger is a no-op)
    uow.commit()
    return new_id
