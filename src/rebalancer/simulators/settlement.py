"""A simulated settlement agent: T+n confirmations of fills on business days.

Pure and deterministic: the same fill always gives the same confirmation (same
``settlement_id``, date and outcome), so a redelivered fill is settled idempotently.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from datetime import date, timedelta

from rebalancer.contracts import ExecutionReportV1, SettlementConfirmedV1, SettlementStatus

FAIL_REASON = "failed to deliver (simulated)"


def is_business_day(day: date, holidays: frozenset[date] = frozenset()) -> bool:
    """Whether ``day`` is a Monday-to-Friday date not in ``holidays``."""
    return day.weekday() < 5 and day not in holidays


def add_business_days(day: date, n: int, holidays: Iterable[date] = ()) -> date:
    """The ``n``-th business day after ``day`` (``n = 0``: ``day`` itself if a business day,
    else the next one).

    Parameters
    ----------
    day
        Start date (need not be a business day).
    n
        Business days to add, >= 0.
    holidays
        Dates that are not business days besides weekends.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    hol = frozenset(holidays)
    if n == 0:
        while not is_business_day(day, hol):
            day += timedelta(days=1)
        return day
    while n > 0:
        day += timedelta(days=1)
        if is_business_day(day, hol):
            n -= 1
    return day


class SettlementAgent:
    """Settles fills ``settlement_days`` business days after their trade date.

    Parameters
    ----------
    fail_probability
        Chance that a settlement fails (decided per fill by a hash of ``(seed, report_id)``).
    holidays
        Non-business days besides weekends.
    seed
        Seed of the failure draw.
    """

    def __init__(
        self, fail_probability: float = 0.0, holidays: Iterable[date] = (), *, seed: int = 0
    ) -> None:
        if not 0.0 <= fail_probability <= 1.0:
            raise ValueError(f"fail_probability must be in [0, 1], got {fail_probability}")
        self.fail_probability = fail_probability
        self.holidays = frozenset(holidays)
        self.seed = seed

    def settle_date(self, trade_date: date, settlement_days: int = 1) -> date:
        """The settlement date of a trade on ``trade_date`` (T + ``settlement_days``)."""
        return add_business_days(trade_date, settlement_days, self.holidays)

    def _fails(self, report_id: str) -> bool:
        unit = zlib.crc32(f"{self.seed}|{report_id}".encode()) / 2**32
        return unit < self.fail_probability

    def settle(
        self, report: ExecutionReportV1, trade_date: date, settlement_days: int = 1
    ) -> SettlementConfirmedV1:
        """The confirmation of one fill.

        Parameters
        ----------
        report
            A ``partial_fill`` or ``fill`` report.
        trade_date
            The business date the fill happened on.
        settlement_days
            1 for T+1, 2 for T+2, ... (usually the instrument's ``settlement_days``).

        Raises
        ------
        ValueError
            If ``report`` is not a fill.
        """
        if not report.kind.is_fill or report.fill_price is None:
            raise ValueError(f"report {report.report_id} is a {report.kind}, not a fill")
        failed = self._fails(report.report_id)
        return SettlementConfirmedV1(
            settlement_id=f"stl-{report.report_id}",
            report_id=report.report_id,
            order_id=report.order_id,
            account_id=report.account_id,
            instrument=report.instrument,
            side=report.side,
            quantity=report.fill_quantity,
            price=report.fill_price,
            trade_date=trade_date,
            settle_date=self.settle_date(trade_date, settlement_days),
            status=SettlementStatus.FAILED if failed else SettlementStatus.SETTLED,
            reason=FAIL_REASON if failed else None,
        )
