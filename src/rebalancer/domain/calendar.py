"""Business days, market hours and rebalancing schedules in a timezone.

No clock is read: callers pass ``now`` (a timezone-aware :class:`~datetime.datetime`) or a date.

Schedules
---------
A :class:`Schedule` fires once per *period* (a day, an ISO week, a month, a quarter in the
schedule's timezone) on one business day of that period at a local time. :func:`period_key`
names the period containing ``now`` (e.g. ``"M:2024-03"``); :func:`latest_due` gives the most
recent scheduled firing at or before ``now`` together with *its* period key. Storing the key
under a unique constraint ``(account, schedule, period_key)`` makes one period fire at most once,
even with two workers or after a restart (a missed firing is caught up once, not per period).

Business-day adjustment is *modified following*: a nominal day that is not a business day moves
to the next business day, unless that leaves the period, in which case it moves back to the
previous one. ``anchor="last"`` is the last business day of the period (month end on a weekend
fires on the Friday before, or earlier if that is a holiday).
"""

from __future__ import annotations

import calendar as _cal
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rebalancer.domain.errors import InvalidInput

_MAX_LOOKBACK_PERIODS = 400


@dataclass(frozen=True)
class BusinessCalendar:
    """Exchange calendar: weekends, holidays and trading hours in a timezone.

    Attributes
    ----------
    tz
        IANA timezone name of the exchange, e.g. ``"America/New_York"``.
    holidays
        Full-day closures (local dates).
    open, close
        Regular session, local wall-clock times (``open <= t < close`` is open).
    early_closes
        Local date -> early closing time (e.g. the day after Thanksgiving at 13:00).
    weekend
        ISO weekday numbers minus one (Monday = 0) that are never business days.
    """

    tz: str = "America/New_York"
    holidays: frozenset[date] = frozenset()
    open: time = time(9, 30)
    close: time = time(16, 0)
    early_closes: Mapping[date, time] = field(default_factory=dict)
    weekend: frozenset[int] = frozenset({5, 6})

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise InvalidInput(f"unknown timezone {self.tz!r}", ["calendar.tz"]) from exc
        if self.open >= self.close:
            raise InvalidInput("market open must be before close", ["calendar.open"])

    @property
    def zone(self) -> ZoneInfo:
        """The :class:`~zoneinfo.ZoneInfo` of :attr:`tz`."""
        return ZoneInfo(self.tz)

    def is_business_day(self, d: date) -> bool:
        """Not a weekend day and not a holiday."""
        return d.weekday() not in self.weekend and d not in self.holidays

    def add_business_days(self, d: date, n: int) -> date:
        """The ``n``-th business day after ``d`` (before it for negative ``n``; ``d`` for 0)."""
        step = 1 if n >= 0 else -1
        remaining = abs(n)
        while remaining:
            d += timedelta(days=step)
            if self.is_business_day(d):
                remaining -= 1
        return d

    def next_business_day(self, d: date, *, inclusive: bool = True) -> date:
        """First business day on or after ``d`` (strictly after when ``inclusive`` is false)."""
        if not inclusive:
            d += timedelta(days=1)
        while not self.is_business_day(d):
            d += timedelta(days=1)
        return d

    def previous_business_day(self, d: date, *, inclusive: bool = True) -> date:
        """Last business day on or before ``d`` (strictly before when ``inclusive`` is false)."""
        if not inclusive:
            d -= timedelta(days=1)
        while not self.is_business_day(d):
            d -= timedelta(days=1)
        return d

    def local(self, now: datetime) -> datetime:
        """``now`` converted to the calendar's timezone; naive datetimes are refused."""
        if now.tzinfo is None or now.utcoffset() is None:
            raise InvalidInput("now must be timezone-aware", ["now"])
        return now.astimezone(self.zone)

    def session(self, d: date) -> tuple[datetime, datetime] | None:
        """Open and close of the session on local date ``d`` (aware), ``None`` if closed all day."""
        if not self.is_business_day(d):
            return None
        close = self.early_closes.get(d, self.close)
        return combine_local(d, self.open, self.zone), combine_local(d, close, self.zone)

    def is_market_open(self, now: datetime) -> bool:
        """Whether the regular session is open at instant ``now``."""
        session = self.session(self.local(now).date())
        return session is not None and session[0] <= now < session[1]


def combine_local(d: date, t: time, zone: ZoneInfo) -> datetime:
    """Aware local datetime of wall time ``t`` on ``d``, valid across DST changes.

    A wall time skipped by a spring-forward change (e.g. 02:30) maps to the instant an hour
    later on the clock (03:30 daylight time); a repeated fall-back time takes its first instant.
    """
    naive = datetime.combine(d, t).replace(tzinfo=zone, fold=0)
    return naive.astimezone(UTC).astimezone(zone)


class Frequency(enum.StrEnum):
    """How often a calendar schedule fires."""

    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"


@dataclass(frozen=True)
class Schedule:
    """A calendar trigger schedule.

    Attributes
    ----------
    id
        Schedule id (part of the natural key of a firing).
    frequency
        Period length.
    at
        Local wall-clock time of the firing in the calendar's timezone.
    anchor
        ``"first"`` or ``"last"`` business day of the period; or, for weekly, a weekday number
        (Monday = 0), for monthly and quarterly a day number of the month (of the quarter's
        first month), clamped to the month's length. Ignored for daily (every business day).
    calendar
        Business days, holidays and timezone.
    """

    id: str
    frequency: Frequency
    at: time = time(10, 0)
    anchor: str | int = "last"
    calendar: BusinessCalendar = field(default_factory=BusinessCalendar)

    def __post_init__(self) -> None:
        a = self.anchor
        if self.frequency == Frequency.WEEKLY and not (
            a in ("first", "last") or (isinstance(a, int) and 0 <= a <= 6)
        ):
            raise InvalidInput(
                "weekly anchor must be 'first', 'last' or a weekday 0-6 (Monday = 0)",
                ["schedule.anchor"],
            )
        if self.frequency in (Frequency.MONTHLY, Frequency.QUARTERLY) and not (
            a in ("first", "last") or (isinstance(a, int) and 1 <= a <= 31)
        ):
            raise InvalidInput(
                "monthly/quarterly anchor must be 'first', 'last' or a day 1-31",
                ["schedule.anchor"],
            )


def period_bounds(frequency: Frequency, d: date) -> tuple[date, date]:
    """First and last local date of the period of ``frequency`` containing ``d``."""
    if frequency == Frequency.DAILY:
        return d, d
    if frequency == Frequency.WEEKLY:
        start = d - timedelta(days=d.weekday())
        return start, start + timedelta(days=6)
    first_month = d.month if frequency == Frequency.MONTHLY else 3 * ((d.month - 1) // 3) + 1
    last_month = first_month if frequency == Frequency.MONTHLY else first_month + 2
    end = date(d.year, last_month, _cal.monthrange(d.year, last_month)[1])
    return date(d.year, first_month, 1), end


def _key_for_date(frequency: Frequency, d: date) -> str:
    if frequency == Frequency.DAILY:
        return f"D:{d.isoformat()}"
    if frequency == Frequency.WEEKLY:
        iso = d.isocalendar()
        return f"W:{iso.year}-W{iso.week:02d}"
    if frequency == Frequency.MONTHLY:
        return f"M:{d.year}-{d.month:02d}"
    return f"Q:{d.year}-Q{(d.month - 1) // 3 + 1}"


def period_key(schedule: Schedule, now: datetime) -> str:
    """Natural key of the period containing instant ``now`` in the schedule's timezone.

    ``"D:2024-03-29"``, ``"W:2024-W13"`` (ISO week), ``"M:2024-03"`` or ``"Q:2024-Q1"``.
    """
    return _key_for_date(schedule.frequency, schedule.calendar.local(now).date())


def _fire_date(schedule: Schedule, start: date, end: date) -> date | None:
    """The business day of period ``[start, end]`` on which the schedule fires, if any."""
    cal = schedule.calendar
    if schedule.frequency == Frequency.DAILY:
        return start if cal.is_business_day(start) else None
    a = schedule.anchor
    if a == "first":
        nominal = start
    elif a == "last":
        d = cal.previous_business_day(end)
        return d if d >= start else None
    elif schedule.frequency == Frequency.WEEKLY:
        nominal = start + timedelta(days=int(a))
    else:
        nominal = date(
            start.year, start.month, min(int(a), _cal.monthrange(start.year, start.month)[1])
        )
    d = cal.next_business_day(nominal)
    if d > end:  # modified following
        d = cal.previous_business_day(nominal)
    return d if start <= d <= end else None


@dataclass(frozen=True, slots=True)
class ScheduledFire:
    """One scheduled firing: its period's natural key and its instant (aware, local tz)."""

    period_key: str
    fire_at: datetime


def latest_due(schedule: Schedule, now: datetime) -> ScheduledFire | None:
    """Most recent scheduled firing at or before ``now`` (``None`` if none in ~400 periods).

    The caller fires if no firing with the returned ``period_key`` has been stored yet.
    """
    cal = schedule.calendar
    d = cal.local(now).date()
    for _ in range(_MAX_LOOKBACK_PERIODS):
        start, end = period_bounds(schedule.frequency, d)
        fd = _fire_date(schedule, start, end)
        if fd is not None:
            fire_at = combine_local(fd, schedule.at, cal.zone)
            if fire_at <= now:
                return ScheduledFire(_key_for_date(schedule.frequency, start), fire_at)
        d = start - timedelta(days=1)
    return None


def next_fire(schedule: Schedule, now: datetime) -> ScheduledFire | None:
    """First scheduled firing strictly after ``now`` (``None`` if none in ~400 periods)."""
    cal = schedule.calendar
    d = cal.local(now).date()
    for _ in range(_MAX_LOOKBACK_PERIODS):
        start, end = period_bounds(schedule.frequency, d)
        fd = _fire_date(schedule, start, end)
        if fd is not None:
            fire_at = combine_local(fd, schedule.at, cal.zone)
            if fire_at > now:
                return ScheduledFire(_key_for_date(schedule.frequency, start), fire_at)
        d = end + timedelta(days=1)
    return None
