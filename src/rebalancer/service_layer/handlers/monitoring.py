"""Market data in, drift out: store prices, recompute drift of the affected accounts, keep
snapshots, raise/clear alerts and evaluate triggers."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, time
from typing import Any

from rebalancer.analytics.risk_model import estimate_covariance
from rebalancer.contracts import MarketDataV1
from rebalancer.domain.drift import CovarianceModel, DriftReport, SleeveHoldings, account_drift
from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.model import CASH, Account, ModelPortfolio, blended_targets
from rebalancer.service_layer.unit_of_work import UnitOfWork


def ingest_market_data(uow: UnitOfWork, event: MarketDataV1) -> datetime:
    """Store one day of bars; returns the bar timestamp (market close of ``as_of``, UTC)."""
    ts = datetime.combine(event.as_of, time(21, 0), tzinfo=UTC)
    uow.market.add_bars(
        ts,
        [
            {
                "instrument": b.instrument,
                "close": b.close,
                "volume": b.volume,
                "adv_shares": b.adv_shares,
                "daily_volatility": b.daily_volatility,
                "half_spread_bps": b.half_spread_bps,
            }
            for b in event.bars
        ],
    )
    return ts


def sleeve_holdings(
    account: Account, weights: Mapping[str, float], models: Mapping[str, ModelPortfolio]
) -> list[SleeveHoldings]:
    """Attribute pooled holdings to sleeves pro rata to what each sleeve should hold.

    Lots are held by the account, not by a sleeve, so each instrument's current weight is split
    among sleeves in proportion to ``share * model weight`` (by ``share`` alone where no sleeve
    targets it).
    """
    if len(account.sleeves) <= 1:
        return [
            SleeveHoldings(s, models[s.model_id].weights(), dict(weights)) for s in account.sleeves
        ]
    out = []
    for s in account.sleeves:
        cur: dict[str, float] = {}
        for inst, w in weights.items():
            wants = {
                o.id: o.share * models[o.model_id].weights().get(inst, 0.0) for o in account.sleeves
            }
            total = sum(wants.values())
            frac = wants[s.id] / total if total > 0 else s.share
            cur[inst] = w * frac
        out.append(SleeveHoldings(s, models[s.model_id].weights(), cur))
    return out


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
    from decimal import Decimal

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


def drift_view(uow: UnitOfWork, account_id: str) -> dict[str, Any]:
    """``GET /v1/accounts/{id}/drift``: current drift at every level, NAV and trend."""
    from rebalancer.domain.drift import drift_trend

    account = uow.accounts.get(account_id)
    report, nav = compute_drift(uow, account)
    history = uow.rebalancing.drift_history(account_id)
    series = [(r.ts, float(r.total_abs_drift) / 2.0) for r in history]
    trend = drift_trend(series, band=0.05).to_dict() if len(series) >= 2 else None
    out = report.to_dict()
    out.update(nav=nav, trend=trend, snapshots=len(series))
    return _finite(out)


def _finite(value: Any) -> Any:
    """Replace NaN/inf (not valid JSON) by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def accounts_touched(uow: UnitOfWork, instruments: Sequence[str]) -> list[str]:
    """Accounts of the tenant holding or targeting any of ``instruments``."""
    wanted = set(instruments)
    held = uow.accounts.holding_instruments()
    ids = {a for a, insts in held.items() if insts & wanted}
    for rec in uow.models.list():
        if wanted & set(rec.model.targets):
            ids.update(uow.accounts.list_ids(model_id=rec.model.id, limit=1_000_000))
    return sorted(ids)


DEFAULT_BANDS: dict[str, float] = {
    "instrument_abs": 0.03,
    "instrument_rel": 0.25,
    "asset_class_abs": 0.05,
    "account_turnover": 0.04,
    "min_target_for_rel": 0.02,
    "hysteresis": 0.2,
}
"""Default drift bands (fractions of NAV; ``instrument_rel`` is a fraction of the target).

A model's ``bands`` override these keys. An alert is raised when a drift exceeds its band and
cleared only once it falls below ``band * (1 - hysteresis)``, so drift hovering at a band does not
raise an alert storm.
"""

THRESHOLD_PRIORITY = 50


def _bands_for(uow: UnitOfWork, account: Account) -> dict[str, float]:
    bands = dict(DEFAULT_BANDS)
    for rec in uow.models.get_many(s.model_id for s in account.sleeves).values():
        for k, v in rec.bands.items():
            if k in bands:
                bands[k] = min(bands[k], float(v)) if k != "hysteresis" else float(v)
    return bands


def breaches(
    report: DriftReport, bands: Mapping[str, float]
) -> list[tuple[str, str, float, float]]:
    """``(level, key, drift, band)`` for every drift over its band (absolute values)."""
    out: list[tuple[str, str, float, float]] = []
    for key, d in report.levels["instrument"].items():
        if abs(d.absolute) > bands["instrument_abs"]:
            out.append(("instrument", key, d.absolute, bands["instrument_abs"]))
        elif (
            d.relative is not None
            and d.target >= bands["min_target_for_rel"]
            and abs(d.relative) > bands["instrument_rel"]
        ):
            out.append(("instrument_relative", key, d.relative, bands["instrument_rel"]))
    for key, d in report.levels["asset_class"].items():
        if abs(d.absolute) > bands["asset_class_abs"]:
            out.append(("asset_class", key, d.absolute, bands["asset_class_abs"]))
    if report.account.turnover > bands["account_turnover"]:
        out.append(("account", "turnover", report.account.turnover, bands["account_turnover"]))
    return out


def _severity(drift: float, band: float) -> str:
    ratio = abs(drift) / band if band > 0 else float("inf")
    return "critical" if ratio >= 2 else "warning" if ratio >= 1 else "info"


def update_alerts(
    uow: UnitOfWork,
    account: Account,
    report: DriftReport,
    bands: Mapping[str, float],
    as_of: Any,
) -> None:
    """Raise new alerts for breaches, clear alerts whose drift fell below the hysteresis band."""
    from rebalancer.contracts import DriftAlertV1, EventType, new_event

    current = {(lvl, key): (drift, band) for lvl, key, drift, band in breaches(report, bands)}
    open_alerts = {
        (a.level, a.key): a for a in uow.rebalancing.open_alerts(account.id) if a.kind == "drift"
    }
    values = {("instrument", k): d.absolute for k, d in report.levels["instrument"].items()}
    values.update(
        {
            ("instrument_relative", k): (d.relative or 0.0)
            for k, d in report.levels["instrument"].items()
        }
    )
    values.update({("asset_class", k): d.absolute for k, d in report.levels["asset_class"].items()})
    values[("account", "turnover")] = report.account.turnover
    events = []
    for (lvl, key), (drift, band) in current.items():
        if (lvl, key) in open_alerts:
            continue
        sev = _severity(drift, band)
        uow.rebalancing.raise_alert(
            {
                "account_id": account.id,
                "kind": "drift",
                "level": lvl,
                "key": key,
                "severity": sev,
                "state": "raised",
                "value": drift,
                "band": band,
                "message": f"{lvl} drift of {key} is {drift:+.2%}, band {band:.2%}",
            }
        )
        events.append(
            DriftAlertV1(
                account_id=account.id,
                as_of=as_of,
                level=lvl,
                key=key,
                drift=drift,
                band=band,
                severity=sev,
                state="raised",
            )
        )
    for (lvl, key), alert in open_alerts.items():
        value = abs(values.get((lvl, key), 0.0))
        if (lvl, key) not in current and value < float(alert.band) * (1 - bands["hysteresis"]):
            uow.rebalancing.clear_alert(alert.id)
            events.append(
                DriftAlertV1(
                    account_id=account.id,
                    as_of=as_of,
                    level=lvl,
                    key=key,
                    drift=values.get((lvl, key), 0.0),
                    band=float(alert.band),
                    severity=alert.severity,
                    state="cleared",
                )
            )
    uow.publish(
        *(
            new_event(EventType.DRIFT_ALERT, e, tenant_id=uow.tenant_id, key=account.id)
            for e in events
        )
    )


def evaluate_account(uow: UnitOfWork, account: Account, ts: datetime) -> list[str]:
    """Snapshot drift, update alerts and evaluate the threshold trigger of one account.

    Every evaluation is logged (fired or not, with inputs and reason). Returns the reasons of
    the fired triggers (empty when nothing fired or the trigger was suppressed).
    """
    report = snapshot(uow, account, ts)
    bands = _bands_for(uow, account)
    update_alerts(uow, account, report, bands, ts.date())
    found = breaches(report, bands)
    inputs = {
        "bands": bands,
        "account_turnover": report.account.turnover,
        "max_abs": report.account.max_abs,
        "max_key": report.account.max_key,
        "breaches": [{"level": lvl, "key": k, "drift": d, "band": b} for lvl, k, d, b in found],
    }
    fired, reason = bool(found), "no drift over its band"
    if found:
        lvl, key, drift, band = max(found, key=lambda x: abs(x[2]) / x[3])
        reason = f"{lvl} drift of {key} {drift:+.2%} exceeds band {band:.2%}"
        if uow.rebalancing.open_rebalance(account.id) is not None:
            fired, reason = False, f"suppressed: a rebalance is already in flight ({reason})"
    uow.rebalancing.add_trigger_evaluations(
        [
            {
                "account_id": account.id,
                "ts": ts,
                "kind": "threshold",
                "fired": fired,
                "priority": THRESHOLD_PRIORITY,
                "reason": reason,
                "inputs": inputs,
            }
        ]
    )
    return [f"threshold: {reason}"] if fired else []


def on_market_data(uow: UnitOfWork, event: MarketDataV1) -> None:
    """Store the bars, then re-evaluate every account (of every tenant) that they touch."""
    from rebalancer.service_layer.handlers.recommending import request_rebalance

    ts = ingest_market_data(uow, event)
    for tenant in uow.tenants.list():  # prices are global; accounts belong to tenants
        scoped = uow.scoped(tenant)
        ids = accounts_touched(scoped, [b.instrument for b in event.bars])
        for account in scoped.accounts.get_many(ids):
            try:
                reasons = evaluate_account(scoped, account, ts)
            except InvalidInput:
                continue  # some instrument has no price yet: nothing to evaluate
            if reasons:
                request_rebalance(scoped, account.id, reasons, THRESHOLD_PRIORITY, commit=False)
    uow.commit()
