"""The outbox, the relay, idempotent consumers and dead letters, on the real PostgreSQL and
pulsar-lite of the test session."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import pulsar
import pytest
import sqlalchemy as sa

from rebalancer.adapters import orm
from rebalancer.adapters.outbox_relay import OutboxRelay
from rebalancer.adapters.pulsar_bus import ConsumerLoop
from rebalancer.contracts import (
    DEAD_LETTER_REASON_PROPERTY,
    EventType,
    LotV1,
    PortfolioStateUpdatedV1,
    StatusEntity,
    StatusUpdatedV1,
    dead_letter_topic,
    decode,
    encode,
    new_event,
)
from rebalancer.domain.model import Account, Instrument, TaxLot
from rebalancer.entrypoints.consumers import SERVICE_CONSUMER, handle_event
from rebalancer.service_layer.handlers import portfolio
from rebalancer.service_layer.unit_of_work import UnitOfWork

pytestmark = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _status_event(tenant: str, account: str) -> Any:
    return new_event(
        EventType.STATUS_UPDATED,
        StatusUpdatedV1(
            entity=StatusEntity.ORDER, entity_id=unique("o"), account_id=account, status="sent"
        ),
        tenant_id=tenant,
        key=account,
    )


def _topic() -> str:
    return f"persistent://public/default/test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def consumer(runtime: Any) -> Iterator[Any]:
    """A factory of plain Pulsar consumers (Shared, earliest) closed after the test."""
    made: list[pulsar.Consumer] = []

    def make(topic: str) -> pulsar.Consumer:
        c = runtime.client.subscribe(
            topic,
            unique("sub"),
            consumer_type=pulsar.ConsumerType.Shared,
            initial_position=pulsar.InitialPosition.Earliest,
        )
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def _outbox_rows(engine: sa.Engine, event_id: uuid.UUID) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(orm.outbox).where(orm.outbox.c.event_id == event_id)))


def test_event_is_written_only_with_its_state_change(engine: sa.Engine) -> None:
    tenant, account = unique("t"), unique("acct")
    rolled_back = _status_event(tenant, account)
    with UnitOfWork(engine, tenant) as uow:
        uow.tenants.ensure(tenant)
        uow.publish(rolled_back)
        # no commit: leaving the block rolls back the state change and its event together
    assert _outbox_rows(engine, rolled_back.event_id) == []

    committed = _status_event(tenant, account)
    with UnitOfWork(engine, tenant) as uow:
        uow.tenants.ensure(tenant)
        uow.publish(committed)
        uow.commit()
    rows = _outbox_rows(engine, committed.event_id)
    assert len(rows) == 1 and rows[0].published_at is None
    assert decode(bytes(rows[0].body)).event_id == committed.event_id


def test_relay_publishes_each_row_and_marks_it(
    runtime: Any, engine: sa.Engine, consumer: Any
) -> None:
    topic = _topic()
    sub = consumer(topic)
    events = [_status_event("tenant-a", unique("acct")) for _ in range(5)]
    with UnitOfWork(engine, "tenant-a") as uow:
        for e in events:
            uow.outbox.add(e, topic=topic)
        uow.commit()
    relay = OutboxRelay(engine, runtime.publisher, batch_size=2)
    assert relay.drain() >= 5
    received = set()
    for _ in range(5):
        msg = sub.receive(timeout_millis=10_000)
        received.add(decode(msg.data()).event_id)
        sub.acknowledge(msg)
    assert received == {e.event_id for e in events}
    for e in events:
        assert _outbox_rows(engine, e.event_id)[0].published_at is not None
    with pytest.raises(pulsar.Timeout):
        sub.receive(timeout_millis=500)  # nothing published twice by a second pass
    relay.relay_once()
    with pytest.raises(pulsar.Timeout):
        sub.receive(timeout_millis=500)


def _account_with_lot(engine: sa.Engine, tenant: str) -> tuple[str, str]:
    inst = unique("INST").upper()
    account = unique("acct")
    with UnitOfWork(engine, tenant) as uow:
        uow.tenants.ensure(tenant)
        portfolio.upsert_instrument(uow, Instrument(inst, sector="tech"))
    with UnitOfWork(engine, tenant) as uow:
        portfolio.create_account(
            uow,
            Account(
                account,
                tenant,
                Decimal("1000"),
                [TaxLot(unique("lot"), inst, Decimal(5), Decimal(10), date(2024, 1, 2))],
            ),
        )
    return account, inst


def test_consumer_applies_an_event_once(runtime: Any, engine: sa.Engine) -> None:
    account, inst = _account_with_lot(engine, "tenant-a")
    new_lot = unique("lot")
    env = new_event(
        EventType.PORTFOLIO_STATE_UPDATED,
        PortfolioStateUpdatedV1(
            account_id=account,
            as_of=date(2024, 6, 3),
            cash=Decimal("900"),
            replace=False,
            lots=[
                LotV1(
                    lot_id=new_lot,
                    instrument=inst,
                    quantity=Decimal(3),
                    cost_basis=Decimal(11),
                    acquired=date(2024, 6, 3),
                )
            ],
        ),
        tenant_id="tenant-a",
        key=account,
    )
    handle_event(runtime, env)
    handle_event(runtime, env)  # redelivered: a second application would duplicate the lot
    with UnitOfWork(engine, "tenant-a") as uow:
        acct = uow.accounts.get(account)
        assert acct.cash == Decimal("900")
        assert sorted(lot.quantity for lot in acct.lots) == [Decimal(3), Decimal(5)]
    with engine.connect() as conn:
        n = conn.execute(
            sa.select(sa.func.count()).where(
                orm.processed_events.c.consumer == SERVICE_CONSUMER,
                orm.processed_events.c.event_id == env.event_id,
            )
        ).scalar()
    assert n == 1


def _run_until(loop: ConsumerLoop, predicate: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "consumer did not get there in time"
        loop.process_one(timeout_ms=200)


def test_poison_events_go_to_the_dead_letter_topic_with_a_reason(
    runtime: Any, consumer: Any
) -> None:
    topic = _topic()
    dlq = consumer(dead_letter_topic(topic))
    handled: list[Any] = []
    attempts: list[int] = []

    def handler(env: Any) -> None:
        if env.key == "always-fails":
            attempts.append(1)
            raise RuntimeError("database said no")
        if env.key == "unknown-account":
            handle_event(runtime, env)
            return
        handled.append(env.event_id)

    loop = ConsumerLoop(
        runtime.client,
        runtime.publisher,
        [topic],
        unique("sub"),
        handler,
        max_redeliveries=3,
        name="test",
    )
    try:
        pub = runtime.publisher
        pub.publish(topic, "k", b"{not json")
        good = _status_event("tenant-a", "acct-x")
        pub.publish(topic, "k", encode(good))
        failing = new_event(
            EventType.STATUS_UPDATED,
            StatusUpdatedV1(
                entity=StatusEntity.ORDER, entity_id="o", account_id="a", status="sent"
            ),
            tenant_id="tenant-a",
            key="always-fails",
        )
        pub.publish(topic, "k", encode(failing))
        refused = new_event(
            EventType.PORTFOLIO_STATE_UPDATED,
            PortfolioStateUpdatedV1(
                account_id=unique("nobody"), as_of=date(2024, 1, 2), cash=Decimal(1), lots=[]
            ),
            tenant_id="tenant-a",
            key="unknown-account",
        )
        pub.publish(topic, "k", encode(refused))
        _run_until(loop, lambda: loop.stats.dead_lettered >= 3 and handled)
    finally:
        loop.close()
    assert handled == [good.event_id]  # the consumer kept running past the poison messages
    assert len(attempts) == 3  # bounded attempts before dead-lettering
    reasons = []
    for _ in range(3):
        msg = dlq.receive(timeout_millis=10_000)
        reasons.append(msg.properties()[DEAD_LETTER_REASON_PROPERTY])
        dlq.acknowledge(msg)
    assert any(r.startswith("malformed:") for r in reasons)
    assert any("unprocessable after 3 attempts" in r and "database said no" in r for r in reasons)
    assert any("unknown_account" in r for r in reasons)
