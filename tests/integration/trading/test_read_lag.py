"""The order sweeper waits longer while the service's consumers read the venue's execution
reports late (real PostgreSQL): the delay is measured per process (``ReadLag``, table
``consumer_lag``) and the sweeper's clock is held back by the largest recent one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from tradehelpers import approve_one, rows

from rebalancer.adapters import orm
from rebalancer.bootstrap import Runtime
from rebalancer.contracts import EventType, ExecutionReportV1, ReportKind, Side, new_event
from rebalancer.entrypoints.consumers import handle_event
from rebalancer.entrypoints.read_lag import ReadLag, read_lag
from rebalancer.entrypoints.sweeper import OrderSweeper

pytestmark = pytest.mark.integration
TIMEOUT = timedelta(seconds=30)


@pytest.fixture
def consumers(engine: Any) -> Iterator[list[str]]:
    """Consumer ids a test writes rows for; their rows are deleted afterwards (a large delay
    left behind would hold back the sweepers of later tests)."""
    ids: list[str] = []
    yield ids
    with engine.begin() as conn:
        conn.execute(sa.delete(orm.consumer_lag).where(orm.consumer_lag.c.consumer.in_(ids)))


def _lag_row(engine: Any, consumer: str, lag_s: float, measured_at: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.insert(orm.consumer_lag).values(
                consumer=consumer, lag_s=lag_s, measured_at=measured_at
            )
        )


def _stored_lag(engine: Any, consumer: str) -> float | None:
    with engine.connect() as conn:
        value = conn.execute(
            sa.select(orm.consumer_lag.c.lag_s).where(orm.consumer_lag.c.consumer == consumer)
        ).scalar_one_or_none()
    return None if value is None else float(value)


def test_read_lag_writes_the_largest_delay_at_most_once_per_interval(
    engine: Any, consumers: list[str]
) -> None:
    tick = {"t": 100.0}
    meter = ReadLag(engine, f"test-{uuid.uuid4().hex[:8]}", every_s=1.0, clock=lambda: tick["t"])
    consumers.append(meter.consumer)
    now = datetime.now(UTC)
    meter.observe(now - timedelta(seconds=5), now)  # first: written at once
    assert _stored_lag(engine, meter.consumer) == pytest.approx(5.0)
    tick["t"] = 100.4
    meter.observe(now - timedelta(seconds=42), now)  # within the interval: kept
    meter.observe(now - timedelta(seconds=7), now)
    assert _stored_lag(engine, meter.consumer) == pytest.approx(5.0)
    tick["t"] = 101.5
    meter.observe(now - timedelta(seconds=2), now)  # the largest of the interval: 42
    assert _stored_lag(engine, meter.consumer) == pytest.approx(42.0)
    tick["t"] = 103.0
    meter.observe(now + timedelta(seconds=3), now)  # a venue clock ahead: no negative delay
    assert _stored_lag(engine, meter.consumer) == 0.0


def test_sweeper_holds_its_clock_back_by_the_recent_read_delay(
    engine: Any, consumers: list[str]
) -> None:
    now = datetime.now(UTC) + timedelta(days=3650)  # no other test's rows are this recent
    fresh, stale = f"test-{uuid.uuid4().hex[:8]}", f"test-{uuid.uuid4().hex[:8]}"
    consumers += [fresh, stale]
    sweeper = OrderSweeper(engine, timeout=TIMEOUT, from_publication=False)
    assert sweeper.effective_now(now) == now
    _lag_row(engine, stale, 200.0, now - TIMEOUT - timedelta(seconds=1))  # too old: ignored
    _lag_row(engine, fresh, 45.0, now - timedelta(seconds=3))
    assert sweeper.read_lag(now) == timedelta(seconds=45)
    assert sweeper.effective_now(now) == now - timedelta(seconds=45)
    capped = OrderSweeper(
        engine, timeout=TIMEOUT, from_publication=False, max_read_lag=timedelta(seconds=20)
    )
    assert capped.effective_now(now) == now - timedelta(seconds=20)
    off = OrderSweeper(engine, timeout=TIMEOUT, from_publication=False, max_read_lag=timedelta(0))
    assert off.effective_now(now) == now


def test_no_resend_while_the_acknowledgement_may_still_be_unread(
    engine: Any, consumers: list[str]
) -> None:
    oid, _, sent = approve_one(engine)
    sweeper = OrderSweeper(engine, timeout=TIMEOUT, from_publication=False)
    late = sent + TIMEOUT + timedelta(seconds=10)  # due on the wall clock
    lagging = f"test-{uuid.uuid4().hex[:8]}"
    consumers.append(lagging)
    _lag_row(engine, lagging, 25.0, late - timedelta(seconds=1))  # reports read 25 s late
    sweeper.sweep_once(late)
    (stored,) = rows(engine, orm.orders, id=oid)
    assert stored.send_attempts == 1, "re-sent while its acknowledgement could be unread"
    with engine.begin() as conn:  # the consumers caught up
        conn.execute(sa.delete(orm.consumer_lag).where(orm.consumer_lag.c.consumer == lagging))
    sweeper.sweep_once(late)
    (stored,) = rows(engine, orm.orders, id=oid)
    assert stored.send_attempts == 2


def test_a_handled_execution_report_records_how_late_it_was_read(
    runtime: Runtime, consumers: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    meter = read_lag(runtime.engine)
    consumers.append(meter.consumer)
    monkeypatch.setattr(meter, "every_s", 0.0)  # write on every report
    # the process's meter may hold a larger delay of an earlier test not written yet (its
    # interval had not passed): write it now, so the row below is this report's alone
    meter.observe(datetime.now(UTC))
    report = ExecutionReportV1(
        report_id=f"lag-{uuid.uuid4().hex[:8]}",
        order_id=str(uuid.uuid4()),  # unknown to the service: recorded, changes nothing
        account_id="nobody",
        instrument="XYZ",
        side=Side.BUY,
        kind=ReportKind.ACK,
        fill_quantity=Decimal(0),
        cumulative_quantity=Decimal(0),
        sequence=1,
        venue_time=datetime.now(UTC),
    )
    env = new_event(
        EventType.EXECUTION_REPORT,
        report,
        tenant_id="tenant-a",
        key="nobody",
        occurred_at=datetime.now(UTC) - timedelta(seconds=40),
    )
    handle_event(runtime, env)
    lag = _stored_lag(runtime.engine, meter.consumer)
    assert lag is not None and 40.0 <= lag < 60.0
