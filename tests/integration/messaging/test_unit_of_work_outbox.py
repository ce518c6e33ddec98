"""Events published in a unit of work reach the outbox when it commits, in publish order and
in one statement, and never when it does not commit (also from a tenant-scoped view of the
same transaction)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from rebalancer.adapters import orm
from rebalancer.contracts import EventType, StatusEntity, StatusUpdatedV1, new_event
from rebalancer.service_layer.unit_of_work import UnitOfWork

pytestmark = pytest.mark.integration


def _event(tenant: str) -> Any:
    account = f"acct-{uuid.uuid4().hex[:8]}"
    payload = StatusUpdatedV1(
        entity=StatusEntity.ORDER, entity_id=uuid.uuid4().hex, account_id=account, status="sent"
    )
    return new_event(EventType.STATUS_UPDATED, payload, tenant_id=tenant, key=account)


def _queued(conn: sa.Connection, events: list[Any]) -> list[uuid.UUID]:
    """Event ids of ``events`` in the outbox, in outbox order."""
    o = orm.outbox
    ids = [e.event_id for e in events]
    return list(
        conn.execute(sa.select(o.c.event_id).where(o.c.event_id.in_(ids)).order_by(o.c.id))
        .scalars()
        .all()
    )


def test_published_events_are_written_at_commit_in_order(
    engine: sa.Engine, sql_log: list[str]
) -> None:
    events = [_event("tenant-a") for _ in range(5)]
    with UnitOfWork(engine, "tenant-a") as uow:
        uow.publish(events[0])
        uow.publish(*events[1:4])
        uow.scoped("tenant-b").publish(events[4])  # the same transaction, another view
        assert _queued(uow.conn, events) == []  # nothing written before the commit
        uow.commit()
    assert sum(q.upper().startswith("INSERT INTO OUTBOX") for q in sql_log) == 1
    with engine.connect() as conn:
        assert _queued(conn, events) == [e.event_id for e in events]


def test_events_of_a_unit_of_work_that_does_not_commit_are_dropped(engine: sa.Engine) -> None:
    left, rolled = [_event("tenant-a")], [_event("tenant-a")]
    with UnitOfWork(engine, "tenant-a") as uow:
        uow.publish(*left)
    with UnitOfWork(engine, "tenant-a") as uow:
        uow.publish(*rolled)
        uow.rollback()
        uow.commit()  # nothing left to write: the rollback dropped them
    with engine.connect() as conn:
        assert _queued(conn, left + rolled) == []
