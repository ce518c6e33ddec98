"""Tests of the simulated settlement agent."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rebalancer.contracts import ExecutionReportV1, SettlementStatus
from rebalancer.simulators import SettlementAgent, add_business_days, is_business_day

FRI = date(2024, 3, 1)


def _fill(report_id: str = "o-1:2", kind: str = "fill") -> ExecutionReportV1:
    return ExecutionReportV1(
        report_id=report_id,
        order_id="o-1",
        account_id="acct-1",
        instrument="AAPL",
        side="sell",
        kind=kind,
        fill_quantity=Decimal(10),
        fill_price=Decimal("180.25"),
        cumulative_quantity=Decimal(10),
        sequence=2,
        venue_time=datetime(2024, 3, 1, 15, tzinfo=UTC),
    )


def test_t_plus_one_over_a_weekend() -> None:
    stl = SettlementAgent().settle(_fill(), FRI, 1)
    assert stl.settle_date == date(2024, 3, 4)
    assert stl.status is SettlementStatus.SETTLED
    assert stl.reason is None
    assert (stl.quantity, stl.price, stl.side) == (Decimal(10), Decimal("180.25"), "sell")
    assert (stl.report_id, stl.order_id, stl.trade_date) == ("o-1:2", "o-1", FRI)


def test_t_plus_two_skips_holidays() -> None:
    agent = SettlementAgent(holidays=[date(2024, 3, 4)])
    assert agent.settle(_fill(), FRI, 2).settle_date == date(2024, 3, 6)
    assert agent.settle_date(date(2024, 3, 2), 1) == date(2024, 3, 5)  # Saturday trade


def test_partial_fills_settle_too_but_acks_do_not() -> None:
    agent = SettlementAgent()
    assert agent.settle(_fill(kind="partial_fill"), FRI).quantity == Decimal(10)
    ack = ExecutionReportV1(
        report_id="o-1:1",
        order_id="o-1",
        account_id="acct-1",
        instrument="AAPL",
        side="sell",
        kind="ack",
        sequence=1,
        venue_time=datetime(2024, 3, 1, 15, tzinfo=UTC),
    )
    with pytest.raises(ValueError, match="not a fill"):
        agent.settle(ack, FRI)


def test_deterministic_and_idempotent() -> None:
    agent = SettlementAgent(fail_probability=0.5, seed=3)
    reports = [_fill(f"o-{i}:2") for i in range(40)]
    first = [agent.settle(r, FRI) for r in reports]
    again = [SettlementAgent(fail_probability=0.5, seed=3).settle(r, FRI) for r in reports]
    assert first == again
    assert len({s.settlement_id for s in first}) == 40
    failed = [s for s in first if s.status is SettlementStatus.FAILED]
    assert 0 < len(failed) < 40
    assert all(s.reason for s in failed)


def test_always_fail() -> None:
    stl = SettlementAgent(fail_probability=1.0).settle(_fill(), FRI)
    assert stl.status is SettlementStatus.FAILED and stl.reason


@given(st.dates(date(2000, 1, 1), date(2040, 1, 1)), st.integers(0, 30))
def test_add_business_days(start: date, n: int) -> None:
    end = add_business_days(start, n)
    assert is_business_day(end)
    assert end >= start
    days = [start.fromordinal(o) for o in range(start.toordinal() + 1, end.toordinal() + 1)]
    if n > 0:
        assert sum(is_business_day(d) for d in days) == n
