"""Market data in, drift out: store prices, recompute drift of the affected accounts, keep
snapshots, raise/clear alerts and evaluate every trigger kind.

Entry points
------------
:func:`on_market_data`
    A price tick: drift of every touched account in one :func:`~rebalancer.domain.drift.book_drift`
    call, a vectorised band screen over the book, detailed (per-key) evaluation only where a band
    is breached, an alert is open or the account has several sleeves; snapshots, alerts, the
    threshold, market-signal and rule triggers, coalescing and the gate.
:func:`refresh_account`
    A position change (settlement, portfolio-state update): snapshot and alerts of one account
    (and, optionally, its threshold and rule triggers).
:func:`run_calendar`
    The scheduler step: fires each due (account, schedule, period) at most once, even with two
    workers (``INSERT ... ON CONFLICT DO NOTHING`` on the partial unique index
    ``uq_trigger_period``; only the inserting worker requests the rebalance).
:func:`manual_request`
    A manual request from the API, logged as a ``manual`` evaluation (with its idempotency key).
:func:`drift_view`
    ``GET /v1/accounts/{id}/drift``: drift at every level, NAV, trends and time to breach.

Every evaluation is a ``trigger_evaluations`` row with its inputs and verdict. The per-model
configuration (``models.bands`` and ``models.trigger_rule``) is described in
:mod:`rebalancer.domain.monitoring_config` and ``docs/monitoring.md``.

Modules
-------
``market_data``
    :func:`on_market_data`, :func:`ingest_market_data`, :func:`accounts_touched`.
``book``
    :func:`evaluate_book` (one vectorised evaluation of a book of accounts), :class:`BookResult`.
``drift``
    :func:`compute_drift`, :func:`snapshot`, :func:`refresh_account`, :func:`drift_view`,
    :func:`band_trends`.
``alerts``
    :func:`merge_band_evaluations`, :func:`alert_values`, :func:`update_alerts`.
``signals``
    Volatility, correlation, market-condition, risk-budget and rule evaluation from stored prices.
``gating``
    :func:`decide`: coalesce, gate and request one rebalance per account.
``calendar``
    :func:`run_calendar` and :data:`CALENDAR_KEY_SEPARATOR`.
``manual``
    :func:`manual_request`.
``settings``
    :class:`AccountSettings`, :func:`account_settings` (parsed per-model configuration).
``_common``
    Shared helpers: evaluation rows, JSON-safe values, the database clock,
    :func:`sleeve_holdings`, :data:`THRESHOLD_PRIORITY`.

Every public name is re-exported here, so ``monitoring.<name>`` and
``from rebalancer.service_layer.handlers.monitoring import <name>`` keep working.
"""

from __future__ import annotations

from rebalancer.service_layer.handlers.monitoring._common import (
    THRESHOLD_PRIORITY,
    sleeve_holdings,
)
from rebalancer.service_layer.handlers.monitoring.alerts import (
    alert_values,
    merge_band_evaluations,
    update_alerts,
)
from rebalancer.service_layer.handlers.monitoring.book import BookResult, evaluate_book
from rebalancer.service_layer.handlers.monitoring.calendar import (
    CALENDAR_KEY_SEPARATOR,
    run_calendar,
)
from rebalancer.service_layer.handlers.monitoring.drift import (
    band_trends,
    compute_drift,
    drift_view,
    refresh_account,
    snapshot,
)
from rebalancer.service_layer.handlers.monitoring.gating import decide
from rebalancer.service_layer.handlers.monitoring.manual import manual_request
from rebalancer.service_layer.handlers.monitoring.market_data import (
    accounts_touched,
    ingest_market_data,
    on_market_data,
)
from rebalancer.service_layer.handlers.monitoring.settings import (
    AccountSettings,
    account_settings,
)

__all__ = [
    "CALENDAR_KEY_SEPARATOR",
    "THRESHOLD_PRIORITY",
    "AccountSettings",
    "BookResult",
    "account_settings",
    "accounts_touched",
    "alert_values",
    "band_trends",
    "compute_drift",
    "decide",
    "drift_view",
    "evaluate_book",
    "ingest_market_data",
    "manual_request",
    "merge_band_evaluations",
    "on_market_data",
    "refresh_account",
    "run_calendar",
    "sleeve_holdings",
    "snapshot",
    "update_alerts",
]
