"""The order sweeper's timeouts come from settings and run from when an order's event was
actually published, so a relay running late (a busy machine) does not eat the venue's time.

Real embedded PostgreSQL; the relay's publication is the ``published_at`` stamp it writes, set
here at chosen times, and the sweeper's clock is injected.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pydantic
import pytest
import sqlalchemy as sa
from tradehelpers import approve_one, rows

from rebalancer.adapters import orm
from rebalancer.config import Settings
from rebalancer.entrypoints.sweeper import OrderSweeper

pytestmark = pytest.mark.integration
TIMEOUT = timedelta(minutes=10)


def _publish(engine: Any, after_id: int, at: datetime) -> None:
    """What the relay does once it got the events out: stamp ``published_at``."""
    with engine.begin() as conn:
        conn.execute(
            sa.update(orm.outbox).where(orm.outbox.c.id > after_id).values(published_at=at)
        )


def _sends(engine: Any, oid: uuid.UUID) -> int:
    (stored,) = rows(engine, orm.orders, id=oid)
    return int(stored.send_attempts)


def test_timeout_runs_from_publication_not_from_the_sent_stamp(engine: Any) -> None:
    oid, before, sent = approve_one(engine)
    sweeper = OrderSweeper(engine, timeout=TIMEOUT)

    # still in the outbox two timeouts later (the relay is behind): not due, nothing re-sent
    sweeper.sweep_once(sent + 2 * TIMEOUT)
    assert _sends(engine, oid) == 1

    published = sent + timedelta(minutes=7)  # the relay got it out 7 minutes late
    _publish(engine, before, published)
    assert sweeper.effective_now(sent + TIMEOUT + timedelta(seconds=1)) - TIMEOUT <= sent
    sweeper.sweep_once(sent + TIMEOUT + timedelta(seconds=1))  # old rule: due; venue had 3 min
    assert _sends(engine, oid) == 1
    sweeper.sweep_once(published + TIMEOUT - timedelta(seconds=1))
    assert _sends(engine, oid) == 1
    sweeper.sweep_once(published + TIMEOUT + timedelta(seconds=1))  # a full timeout after
    assert _sends(engine, oid) == 2
    (stored,) = rows(engine, orm.orders, id=oid)
    assert stored.status == "sent"


def test_stamp_based_timeouts_are_still_available(engine: Any) -> None:
    oid, before, sent = approve_one(engine)
    _publish(engine, before, sent + timedelta(minutes=7))
    sweeper = OrderSweeper(engine, timeout=TIMEOUT, from_publication=False)
    sweeper.sweep_once(sent + TIMEOUT + timedelta(seconds=1))
    assert _sends(engine, oid) == 2


def test_sweeper_timeouts_are_settings(engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REBALANCER_ORDER_ACK_TIMEOUT_S", "90")
    monkeypatch.setenv("REBALANCER_ORDER_MAX_SENDS", "5")
    monkeypatch.setenv("REBALANCER_ORDER_SWEEP_INTERVAL_S", "2.5")
    monkeypatch.setenv("REBALANCER_SETTLEMENT_OVERDUE_CHECK_INTERVAL_S", "60")
    monkeypatch.setenv("REBALANCER_SETTLEMENT_OVERDUE_GRACE_BUSINESS_DAYS", "2")
    s = Settings()
    sweeper = OrderSweeper.from_settings(engine, s)
    assert sweeper.timeout == timedelta(seconds=90)
    assert (sweeper.max_sends, sweeper.interval_s) == (5, 2.5)
    assert sweeper.overdue_interval == timedelta(seconds=60)
    assert sweeper.settlement_grace_business_days == 2

    monkeypatch.delenv("REBALANCER_ORDER_ACK_TIMEOUT_S")
    defaults = Settings()
    assert defaults.order_ack_timeout_s == 30.0

    monkeypatch.setenv("REBALANCER_ORDER_ACK_TIMEOUT_S", "0")
    with pytest.raises(pydantic.ValidationError, match="order_ack_timeout_s"):
        Settings()


def test_a_configured_timeout_is_what_the_sweeper_waits(engine: Any) -> None:
    oid, before, sent = approve_one(engine)
    _publish(engine, before, sent)
    s = Settings(order_ack_timeout_s=120.0)
    sweeper = OrderSweeper.from_settings(engine, s)
    sweeper.sweep_once(sent + timedelta(seconds=119))
    assert _sends(engine, oid) == 1
    sweeper.sweep_once(sent + timedelta(seconds=121))
    assert _sends(engine, oid) == 2


def test_an_order_out_in_time_is_due_after_the_timeout(engine: Any) -> None:
    oid, before, sent = approve_one(engine)
    _publish(engine, before, sent)  # the relay kept up
    sweeper = OrderSweeper(engine, timeout=TIMEOUT)
    later = sent + 3 * TIMEOUT
    assert sweeper.effective_now(later) - TIMEOUT > sent  # held back by nothing that matters
    sweeper.sweep_once(later)
    assert _sends(engine, oid) == 2
