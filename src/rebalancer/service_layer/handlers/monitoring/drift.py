"""Drift of one account: compute, snapshot, refresh after a position change and the
``GET /v1/accounts/{id}/drift`` view with trends."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from rebalancer.analytics.risk_model import estimate_covariance
from rebalancer.domain.drift import CovarianceModel, DriftReport, account_drift, drift_trend
from rebalancer.domain.errors import InvalidInput, NotFound
from rebalancer.domain.model import CASH, Account, blended_targets
from rebalancer.domain.triggers import Band
from rebalancer.service_layer.handlers.monitoring._common import _finite, sleeve_holdings
from rebalancer.service_layer.handlers.monitoring.book import BookResult, evaluate_book
from rebalancer.service_layer.handlers.monitoring.settings import account_settings
from rebalancer.service_layer.unit_of_work import UnitOfWork


def compute_drift(
    uow: UnitOfWork, account: Account, *, with_risk: bool = True
) -> tuple[DriftReport, float]:
    """Current multi-level drift of ``account`` and its NAV (currency).

    Raises
    ------
    InvalidInput
        An instrument held or targeted has no stored price.
    """
    models = {
        k: r.model for k, r in uow.models.get_many(s.model_id for s in account.sleeves).items()
    }
    targets = blended_targets(account.sleeves, models)
    ids = sorted({*account.quantities(), *(k for k in targets if k != CASH)})
    quotes = uow.market.latest(ids)
    missing = [i for i in ids if i not in quotes]
    if missing:
        raise InvalidInput(f"no price for {', '.join(missing)} yet", ["instruments"])
    prices = {i: float(quotes[i].price) for i in ids}
    weights = account.weights(prices)
    nav = account.nav(prices)
    instruments = uow.instruments.get_many(ids)
    risk = None
    if with_risk and ids:
        cov = estimate_covariance(
            ids, uow.market.closes(ids), {i: quotes[i].daily_volatility for i in ids}
        )
        risk = CovarianceModel(tuple(ids), cov)
    as_of = max((q.ts for q in quotes.values()), default=None)
    report = account_drift(
        account.id,
        weights,
        targets,
        instruments,
        sleeves=sleeve_holdings(account, weights, models),
        risk_model=risk,
        as_of=as_of,
    )
    return report, nav


def snapshot(uow: UnitOfWork, account: Account, ts: datetime) -> DriftReport:
    """Compute and store a drift snapshot of ``account`` at ``ts``."""
    report, nav = compute_drift(uow, account)
    uow.rebalancing.add_drift_snapshot(
        account.id,
        ts,
        Decimal(str(round(nav, 6))),
        report.account.sum_abs,
        report.account.max_abs,
        report.tracking_error,
        report.to_dict(),
    )
    return report


def refresh_account(
    uow: UnitOfWork,
    account_id: str,
    ts: datetime | None = None,
    *,
    evaluate_triggers: bool = False,
    account: Account | None = None,
) -> BookResult | None:
    """After a position change (settlement, portfolio-state update): store a drift snapshot of
    the account and update its alerts; with ``evaluate_triggers`` also evaluate its threshold,
    risk-budget and rule triggers (source ``position``). Market signals are not re-evaluated.

    ``ts`` defaults to the newest price of the account's instruments (the market clock), so a
    snapshot taken after a settlement replaces the one of the same market time. Does nothing
    (returns None) for an unknown account or one whose instruments have no price yet. Does not
    commit: call it inside the handler's unit of work, before its commit. ``account``: the
    account as the handler holds it after its change (saves loading it again).
    """
    if account is None:
        try:
            account = uow.accounts.get(account_id)
        except NotFound:
            return None
    res = evaluate_book(
        uow,
        [account],
        ts,
        source="position",
        triggers=evaluate_triggers,
        market_signals=False,
    )
    return res if res.accounts else None


def _series(history: Sequence[Any], pick: Callable[[Any], Any]) -> list[tuple[datetime, float]]:
    out = []
    for r in history:
        try:
            v = pick(r)
        except (KeyError, TypeError, AttributeError):
            v = None
        if isinstance(v, int | float) and math.isfinite(v):
            out.append((r.ts, float(v)))
    return out


def _band_metric(b: Band, r: Any) -> Any:
    if b.level == "account":
        if b.metric == "tracking_error":
            return r.tracking_error
        return r.details["summaries"]["instrument"][b.metric]
    if b.key is None:
        return r.details["summaries"][b.level]["max_abs"]
    return r.details["levels"][b.level][b.key]["absolute"]


def band_trends(history: Sequence[Any], bands: Sequence[Band]) -> list[dict[str, Any]]:
    """Slope, EWMA and days to breach of every absolute band over stored snapshots.

    Level bands follow the level's largest absolute drift (or the key's drift for a per-key
    band, where the snapshot has per-key detail); account bands follow their metric.
    """
    out = []
    for b in bands:
        if b.absolute is None:
            continue
        series = _series(history, functools.partial(_band_metric, b))
        trend = drift_trend(series, band=b.absolute).to_dict() if series else None
        out.append(
            {
                "level": b.level,
                "key": b.key,
                "metric": b.metric if b.level == "account" else "max_abs",
                "band": b.absolute,
                "points": len(series),
                "trend": trend,
            }
        )
    return out


def drift_view(uow: UnitOfWork, account_id: str) -> dict[str, Any]:
    """``GET /v1/accounts/{id}/drift``: current drift at every level, NAV and trends.

    ``trend`` follows the one-way turnover to target (slope per day, EWMA, days until the
    account turnover band); ``trends`` does the same for every absolute band of the model.
    """
    account = uow.accounts.get(account_id)
    report, nav = compute_drift(uow, account)
    config = account_settings(uow, account).config
    history = uow.rebalancing.drift_history(account_id)
    series = [(r.ts, float(r.total_abs_drift) / 2.0) for r in history]
    turnover_band = next(
        (b.absolute for b in config.bands if b.level == "account" and b.metric == "turnover"),
        None,
    )
    trend = drift_trend(series, band=turnover_band).to_dict() if len(series) >= 2 else None
    out = report.to_dict()
    out.update(
        nav=nav,
        trend=trend,
        snapshots=len(series),
        trends=band_trends(history, config.bands) if history else [],
    )
    return _finite(out)  # type: ignore[no-any-return]
