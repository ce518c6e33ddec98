"""Business days, market hours and schedules: weekends, holidays, month ends, DST."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from rebalancer.domain.calendar import (
    BusinessCalendar,
    Frequency,
    Schedule,
    combine_local,
    latest_due,
    next_fire,
    period_bounds,
    period_key,
)
from rebalancer.domain.errors import InvalidInput

NY = ZoneInfo("America/New_York")
GOOD_FRIDAY = date(2024, 3, 29)
CAL = BusinessCalendar(
    tz="America/New_York",
    holidays=frozenset({GOOD_FRIDAY, date(2024, 7, 4), date(2024, 12, 25)}),
    early_closes={date(2024, 11, 29): time(13, 0)},
)


def ny(*args: int) -> datetime:
    return datetime(*args, tzinfo=NY)  # type: ignore[misc]


def test_business_days() -> None:
    assert not CAL.is_business_day(date(2024, 3, 30))  # Saturday
    assert not CAL.is_business_day(GOOD_FRIDAY)
    assert CAL.add_business_days(date(2024, 3, 28), 1) == date(2024, 4, 1)
    assert CAL.add_business_days(date(2024, 4, 1), -1) == date(2024, 3, 28)
    assert CAL.add_business_days(date(2024, 3, 28), 0) == date(2024, 3, 28)
    assert CAL.next_business_day(date(2024, 3, 30)) == date(2024, 4, 1)
    assert CAL.previous_business_day(date(2024, 3, 31)) == date(2024, 3, 28)
    assert CAL.next_business_day(date(2024, 4, 1), inclusive=False) == date(2024, 4, 2)


def test_market_hours_and_timezones() -> None:
    assert CAL.is_market_open(ny(2024, 3, 28, 9, 30))
    assert not CAL.is_market_open(ny(2024, 3, 28, 16, 0))
    assert not CAL.is_market_open(ny(2024, 3, 28, 9, 29))
    # 14:00 UTC is 10:00 in New York during daylight time (after 10 March 2024)
    assert CAL.is_market_open(datetime(2024, 3, 28, 14, 0, tzinfo=UTC))
    assert not CAL.is_market_open(ny(2024, 3, 29, 12, 0))  # holiday
    assert not CAL.is_market_open(ny(2024, 11, 29, 13, 30))  # early close
    assert CAL.is_market_open(ny(2024, 11, 29, 12, 59))
    with pytest.raises(InvalidInput) as e:
        CAL.is_market_open(datetime(2024, 3, 28, 12, 0))
    assert e.value.fields == ["now"]
    with pytest.raises(InvalidInput):
        BusinessCalendar(tz="Mars/Olympus")


def test_period_keys() -> None:
    monthly = Schedule("s", Frequency.MONTHLY, calendar=CAL)
    assert period_key(monthly, ny(2024, 3, 31, 23, 59)) == "M:2024-03"
    # 03:30 UTC on 1 April is still 31 March in New York
    assert period_key(monthly, datetime(2024, 4, 1, 3, 30, tzinfo=UTC)) == "M:2024-03"
    assert (
        period_key(Schedule("s", Frequency.QUARTERLY, calendar=CAL), ny(2024, 5, 2)) == "Q:2024-Q2"
    )
    weekly = Schedule("s", Frequency.WEEKLY, anchor=0, calendar=CAL)
    assert period_key(weekly, ny(2024, 12, 30, 12)) == "W:2025-W01"  # ISO week
    assert (
        period_key(Schedule("s", Frequency.DAILY, calendar=CAL), ny(2024, 3, 1)) == "D:2024-03-01"
    )
    assert period_bounds(Frequency.QUARTERLY, date(2024, 8, 15)) == (
        date(2024, 7, 1),
        date(2024, 9, 30),
    )


def test_month_end_on_weekend_and_holiday() -> None:
    # March 2024 ends on Sunday; Friday 29th is Good Friday -> fires Thursday 28th
    s = Schedule("m", Frequency.MONTHLY, at=time(15, 0), anchor="last", calendar=CAL)
    fire = latest_due(s, ny(2024, 3, 31, 12))
    assert fire is not None
    assert fire.fire_at == ny(2024, 3, 28, 15, 0)
    assert fire.period_key == "M:2024-03"
    # before the firing time on the 28th the latest firing is February's (Thu 29 Feb 2024)
    before = latest_due(s, ny(2024, 3, 28, 14, 59))
    assert before is not None and before.period_key == "M:2024-02"
    assert before.fire_at.date() == date(2024, 2, 29)
    nxt = next_fire(s, ny(2024, 3, 28, 15, 0))
    assert nxt is not None and nxt.period_key == "M:2024-04"
    assert nxt.fire_at == ny(2024, 4, 30, 15, 0)


def test_first_business_day_and_modified_following() -> None:
    s = Schedule("m", Frequency.MONTHLY, anchor="first", calendar=CAL)
    fire = next_fire(s, ny(2024, 6, 1))  # 1 June 2024 is a Saturday
    assert fire is not None and fire.fire_at.date() == date(2024, 6, 3)
    # day 30 of March 2024 is a Saturday; following leaves the month -> back to Thursday 28th
    s30 = Schedule("m30", Frequency.MONTHLY, anchor=30, calendar=CAL)
    fire30 = latest_due(s30, ny(2024, 3, 31))
    assert fire30 is not None and fire30.fire_at.date() == date(2024, 3, 28)
    # day 31 in a 30-day month is clamped to the 30th
    f = next_fire(Schedule("m31", Frequency.MONTHLY, anchor=31, calendar=CAL), ny(2024, 4, 1))
    assert f is not None and f.fire_at.date() == date(2024, 4, 30)
    # weekly on Friday, Good Friday is a holiday -> Thursday (stays in the week)
    w = latest_due(Schedule("w", Frequency.WEEKLY, anchor=4, calendar=CAL), ny(2024, 3, 31))
    assert w is not None and w.fire_at.date() == date(2024, 3, 28) and w.period_key == "W:2024-W13"
    last = latest_due(Schedule("w", Frequency.WEEKLY, calendar=CAL), ny(2024, 3, 31))
    assert last is not None and last.fire_at.date() == date(2024, 3, 28)


def test_daily_skips_weekends_and_holidays() -> None:
    s = Schedule("d", Frequency.DAILY, at=time(10, 0), calendar=CAL)
    fire = latest_due(s, ny(2024, 3, 31, 18))  # Sunday after Good Friday
    assert fire is not None and fire.period_key == "D:2024-03-28"
    nxt = next_fire(s, ny(2024, 3, 28, 10, 0))
    assert nxt is not None and nxt.period_key == "D:2024-04-01"


def test_dst_changes() -> None:
    # Spring forward (10 March 2024 in New York): 02:30 does not exist -> 03:30 EDT
    t = combine_local(date(2024, 3, 10), time(2, 30), NY)
    assert t.utcoffset() == timedelta(hours=-4) and (t.hour, t.minute) == (3, 30)
    # Daily at 10:00 local fires at 15:00 UTC in winter and 14:00 UTC in summer
    s = Schedule("d", Frequency.DAILY, at=time(10, 0), calendar=CAL)
    winter = next_fire(s, datetime(2024, 3, 8, 0, tzinfo=UTC))
    summer = next_fire(s, datetime(2024, 3, 11, 0, tzinfo=UTC))
    assert winter is not None and summer is not None
    assert winter.fire_at.astimezone(UTC).hour == 15
    assert summer.fire_at.astimezone(UTC).hour == 14
    # Fall back (3 November 2024): 01:30 happens twice; both instants are the same period
    first = datetime(2024, 11, 3, 5, 30, tzinfo=UTC)  # 01:30 EDT
    second = datetime(2024, 11, 3, 6, 30, tzinfo=UTC)  # 01:30 EST
    daily = Schedule("d", Frequency.DAILY, calendar=CAL)
    assert period_key(daily, first) == period_key(daily, second) == "D:2024-11-03"


def test_one_period_fires_once_when_polled_often() -> None:
    s = Schedule("m", Frequency.MONTHLY, at=time(15, 0), anchor="last", calendar=CAL)
    fired: list[str] = []
    now = ny(2024, 1, 1)
    while now < ny(2024, 7, 1):  # a poller every 6 hours through DST and month ends
        due = latest_due(s, now)
        if due is not None and due.period_key not in fired:
            fired.append(due.period_key)
        now += timedelta(hours=6)
    assert fired == [
        "M:2023-12",
        "M:2024-01",
        "M:2024-02",
        "M:2024-03",
        "M:2024-04",
        "M:2024-05",
        "M:2024-06",
    ]


def test_bad_schedules() -> None:
    with pytest.raises(InvalidInput) as e:
        Schedule("w", Frequency.WEEKLY, anchor=9)
    assert e.value.fields == ["schedule.anchor"]
    with pytest.raises(InvalidInput):
        Schedule("m", Frequency.MONTHLY, anchor=0)
