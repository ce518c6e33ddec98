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
"""

from __future__ import annotations

import dataclasses
import functools
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import sqlalchemy as sa

from rebalancer.adapters.repositories.reference import ModelRecord
from rebalancer.analytics.risk_model import estimate_covariance
from rebalancer.contracts import DriftAlertV1, EventType, MarketDataV1, new_event
from rebalancer.domain.book import (
    BookLayout,
    layout_of_accounts,
    level_groups,
    screen_bands,
    value_paths,
    weights_matrix,
)
from rebalancer.domain.calendar import latest_due
from rebalancer.domain.drift import (
    BookDrift,
    CovarianceModel,
    DriftReport,
    FloatArray,
    SleeveHoldings,
    account_drift,
    book_drift,
    drift_trend,
)
from rebalancer.domain.errors import InvalidInput, NotFound
from rebalancer.domain.model import CASH, Account, Instrument, ModelPortfolio, blended_targets
from rebalancer.domain.monitoring_config import (
    AlertSettings,
    GatePolicy,
    MonitoringConfig,
    SignalSettings,
    combine,
    parse_config,
    parse_trigger_rule,
)
from rebalancer.domain.rules import RuleDefinition
from rebalancer.domain.triggers import (
    DEFAULT_PRIORITY,
    AlertChange,
    AlertPolicy,
    Band,
    Severity,
    TriggerEvaluation,
    TriggerKind,
    coalesce,
    evaluate_bands,
    evaluate_calendar,
    evaluate_correlation_change,
    evaluate_market_condition,
    evaluate_risk_budget,
    evaluate_rule_trigger,
    evaluate_volatility_regime,
    gate,
    manual_trigger,
    next_severity,
)
from rebalancer.service_layer.unit_of_work import UnitOfWork

THRESHOLD_PRIORITY = DEFAULT_PRIORITY[TriggerKind.THRESHOLD]
_SEVERITY_NAME = {Severity.WARNING: "warning", Severity.CRITICAL: "critical"}
_SEVERITY_OF = {"warning": Severity.WARNING, "critical": Severity.CRITICAL, "info": Severity.NONE}


# --------------------------------------------------------------------------- market data
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


def _finite(value: Any) -> Any:
    """Replace NaN/inf (not valid JSON) by None, recursively; NumPy scalars become floats."""
    if isinstance(value, np.floating | np.integer):
        value = value.item()
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


# --------------------------------------------------------------------------- settings
@dataclasses.dataclass(frozen=True)
class AccountSettings:
    """Monitoring settings of one account (from the models of its sleeves).

    ``problems`` lists stored configuration that no longer parses (defaults are used instead);
    it is copied into the inputs of every evaluation of the account.
    """

    config: MonitoringConfig
    rule: RuleDefinition | None
    main_model: str | None
    problems: tuple[str, ...] = ()


class _Models:
    """Per-call cache of model records and their parsed monitoring settings."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self.records: dict[str, ModelRecord] = {}
        self.parsed: dict[str, tuple[MonitoringConfig, RuleDefinition | None, list[str]]] = {}

    def record(self, model_id: str) -> ModelRecord:
        if model_id not in self.records:
            self.records[model_id] = self.uow.models.get(model_id)
        return self.records[model_id]

    def models(self, account: Account) -> dict[str, ModelPortfolio]:
        return {s.model_id: self.record(s.model_id).model for s in account.sleeves}

    def _parsed(self, model_id: str) -> tuple[MonitoringConfig, RuleDefinition | None, list[str]]:
        if model_id not in self.parsed:
            rec = self.record(model_id)
            problems = []
            try:
                config = parse_config(rec.bands)
            except InvalidInput as exc:
                config = parse_config({})
                problems.append(f"model {model_id} bands ignored: {exc.detail}")
            try:
                rule = parse_trigger_rule(rec.trigger_rule)
            except InvalidInput as exc:
                rule = None
                problems.append(f"model {model_id} trigger_rule ignored: {exc.detail}")
            self.parsed[model_id] = (config, rule, problems)
        return self.parsed[model_id]

    def settings(self, account: Account) -> AccountSettings:
        if not account.sleeves:
            return AccountSettings(parse_config({}), None, None)
        parts = [(s.share, s.model_id, *self._parsed(s.model_id)) for s in account.sleeves]
        main = max(parts, key=lambda p: p[0])
        rule = main[3] or next((p[3] for p in parts if p[3] is not None), None)
        problems = tuple(dict.fromkeys(x for p in parts for x in p[4]))
        return AccountSettings(combine([(p[0], p[2]) for p in parts]), rule, main[1], problems)


def account_settings(uow: UnitOfWork, account: Account) -> AccountSettings:
    """The monitoring settings of ``account`` (bands, alerts, schedules, signals, policy, rule)."""
    return _Models(uow).settings(account)


# --------------------------------------------------------------------------- evaluation rows
def _row(
    account_id: str,
    ts: datetime,
    ev: TriggerEvaluation,
    *,
    fired: bool | None = None,
    reason: str | None = None,
    extra: Mapping[str, Any] | None = None,
    period_key: str | None = None,
) -> dict[str, Any]:
    inputs = dict(ev.inputs)
    if extra:
        inputs.update(extra)
    return {
        "account_id": account_id,
        "ts": ts,
        "kind": str(ev.kind),
        "fired": ev.fired if fired is None else fired,
        "priority": ev.priority,
        "reason": reason or ev.reason,
        "inputs": _finite(inputs),
        "period_key": period_key,
    }


def _db_now(uow: UnitOfWork) -> datetime:
    now: datetime = uow.conn.execute(sa.select(sa.func.now())).scalar_one()
    return now


def _clip(text: str, limit: int = 200) -> str:
    """At most ``limit`` characters (event fields such as rebalance reasons are bounded)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind_of(reason: str) -> str:
    return reason.split(":", 1)[0]


def decide(
    uow: UnitOfWork,
    account_id: str,
    evaluations: Sequence[TriggerEvaluation],
    *,
    ts: datetime,
    source: str,
    policy: GatePolicy,
    out_rows: list[dict[str, Any]],
    period_keys: Mapping[int, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> uuid.UUID | None:
    """Coalesce, gate and (if allowed) request one rebalance for the fired ``evaluations``.

    Not-fired and suppressed evaluations are appended to ``out_rows`` (for one bulk insert by
    the caller); a suppressed one is stored with ``fired = false`` and the suppression as its
    reason, so a suppressed calendar period can still fire later. Fired evaluations are inserted
    here one by one, those with a period key (``period_keys``: index -> key) only if no other
    fired evaluation holds that period: only the worker whose insert won requests the
    rebalance. Returns the rebalance started or joined, if any.
    """
    keys = period_keys or {}
    base = dict(extra or {})
    base["source"] = source
    request = coalesce(account_id, evaluations)
    if request is None:
        out_rows.extend(
            _row(account_id, ts, e, extra=base, period_key=keys.get(k))
            for k, e in enumerate(evaluations)
        )
        return None
    open_reb = uow.rebalancing.open_rebalance(account_id)
    orders = uow.rebalancing.open_order_count(account_id) if policy.suppress_open_orders else 0
    cooldown_on = policy.cooldown > timedelta(0) and open_reb is None
    last = uow.rebalancing.last_rebalance_time(account_id) if cooldown_on else None
    market_open = (
        policy.calendar.is_market_open(ts) if source in policy.suppress_market_closed else True
    )
    decision = gate(
        request,
        now=_db_now(uow) if cooldown_on else ts,
        market_open=market_open,
        open_orders=orders,
        last_rebalance_at=last,
        cooldown=policy.cooldown,
    )
    info = {
        **base,
        "gate": decision.to_dict(),
        "coalesced": {"priority": request.priority, "kinds": [str(k) for k in request.kinds]},
        "open_rebalance": str(open_reb.id) if open_reb is not None else None,
    }
    if not decision.allowed:
        why = "; ".join(decision.reasons)
        for k, e in enumerate(evaluations):
            if e.fired:
                out_rows.append(
                    _row(
                        account_id,
                        ts,
                        e,
                        fired=False,
                        reason=f"suppressed ({why}): {e.reason}",
                        extra={**info, "suppressed": True},
                        period_key=keys.get(k),
                    )
                )
            else:
                out_rows.append(_row(account_id, ts, e, extra=base, period_key=keys.get(k)))
        return None
    winners: list[tuple[uuid.UUID, TriggerEvaluation]] = []
    for k, e in enumerate(evaluations):
        if not e.fired:
            out_rows.append(_row(account_id, ts, e, extra=base, period_key=keys.get(k)))
            continue
        row = _row(account_id, ts, e, extra=info, period_key=keys.get(k))
        eid = uow.rebalancing.add_trigger_evaluation_once(row)
        if eid is None:  # another worker fired this period first
            out_rows.append(
                {
                    **row,
                    "fired": False,
                    "reason": f"period {keys.get(k)} already fired by another worker: {e.reason}",
                }
            )
            continue
        winners.append((eid, e))
    if not winners:
        return None
    from rebalancer.service_layer.handlers.recommending import request_rebalance

    reasons = list(dict.fromkeys(_clip(f"{e.kind}: {e.reason}") for _, e in winners))
    priority = max(e.priority for _, e in winners)
    uow.accounts.get(account_id, lock=True)  # serializes with other triggers of the account
    current = uow.rebalancing.open_rebalance(account_id)
    if current is not None:  # one reason per kind in an open rebalance (no growth per tick)
        have = {_kind_of(r) for r in current.reasons}
        reasons = [r for r in reasons if _kind_of(r) not in have]
    if current is not None and not reasons:
        uow.rebalancing.merge_rebalance_reasons(current.id, [], priority)
        rid: uuid.UUID = current.id
    else:
        rid, _ = request_rebalance(uow, account_id, reasons, priority, commit=False)
    uow.rebalancing.set_evaluations_rebalance([eid for eid, _ in winners], rid)
    return rid


# --------------------------------------------------------------------------- bands and alerts
def merge_band_evaluations(evs: Sequence[TriggerEvaluation]) -> TriggerEvaluation:
    """One ``threshold`` evaluation from the per-band ones: fired if any band fired, with the
    highest fired priority, every fired reason and each band's inputs and verdict."""
    fired = [e for e in evs if e.fired]
    prio = max((e.priority for e in (fired or evs)), default=THRESHOLD_PRIORITY)
    reason = "; ".join(dict.fromkeys(e.reason for e in fired)) or "every drift band within"
    bands = [{**e.inputs, "fired": e.fired, "reason": e.reason} for e in evs]
    return TriggerEvaluation(TriggerKind.THRESHOLD, bool(fired), reason, {"bands": bands}, prio)


def _screened(b: Band, value: float) -> TriggerEvaluation:
    """The evaluation of a band that the book screen found not breached (no per-key detail)."""
    inputs: dict[str, Any] = {
        "level": b.level,
        "absolute_band": b.absolute,
        "relative_band": b.relative,
        "key": b.key,
        "screened": True,
    }
    if b.level == "account":
        inputs.update(metric=b.metric, value=value)
        reason = f"account {b.metric} {value} < band {b.absolute}"
    else:
        inputs["max_abs"] = value
        reason = f"{b.level} drift within band"
    return TriggerEvaluation(TriggerKind.THRESHOLD, False, reason, inputs, b.priority)


def alert_values(
    report: DriftReport, bands: Sequence[Band]
) -> dict[tuple[str, str], tuple[float, float]]:
    """``(level, key) -> (signed drift, band)`` that alerts watch; the tightest band wins.

    Relative bands watch level ``<level>_relative`` (drift as a fraction of the target); account
    bands watch level ``account`` with the metric as key.
    """
    out: dict[tuple[str, str], tuple[float, float]] = {}

    def put(lk: tuple[str, str], value: float, band: float) -> None:
        if band > 0 and (lk not in out or band < out[lk][1]):
            out[lk] = (value, band)

    for b in bands:
        if b.level == "account":
            v = (
                report.tracking_error
                if b.metric == "tracking_error"
                else getattr(report.account, b.metric)
            )
            if v is not None and b.absolute is not None:
                put(("account", b.metric), float(v), b.absolute)
            continue
        for key, d in report.levels.get(b.level, {}).items():
            if b.key is not None and key != b.key:
                continue
            if b.absolute is not None:
                put((b.level, key), d.absolute, b.absolute)
            if b.relative is not None and d.relative is not None and d.target >= b.min_target:
                put((f"{b.level}_relative", key), d.relative, b.relative)
    return out


def update_alerts(
    uow: UnitOfWork,
    account_id: str,
    report: DriftReport,
    bands: Sequence[Band],
    settings: AlertSettings,
    open_rows: Sequence[Any],
    as_of: date,
) -> list[DriftAlertV1]:
    """Raise, escalate, de-escalate and clear drift alerts with hysteresis
    (:func:`~rebalancer.domain.triggers.next_severity`); returns the events to publish."""
    values = alert_values(report, bands)
    open_by = {(a.level, a.key): a for a in open_rows if a.kind == "drift"}
    events = []
    for lk in sorted(set(values) | set(open_by)):
        alert = open_by.get(lk)
        if lk in values:
            value, band = values[lk]
        else:  # no band watches it any more: clear
            value, band = 0.0, float(alert.band or 0.0) if alert is not None else 0.0
        prev = _SEVERITY_OF.get(alert.severity, Severity.WARNING) if alert else Severity.NONE
        policy = AlertPolicy(band, band * settings.critical_multiple, settings.hysteresis)
        change = (
            next_severity(policy, value, prev) if band > 0 else AlertChange(prev, Severity.NONE)
        )
        if not change.changed:
            continue
        level, key = lk
        if change.current == Severity.NONE:
            assert alert is not None
            uow.rebalancing.clear_alert(alert.id)
            sev, state = alert.severity, "cleared"
        else:
            sev, state = _SEVERITY_NAME[change.current], "raised"
            if alert is None:
                uow.rebalancing.raise_alert(
                    {
                        "account_id": account_id,
                        "kind": "drift",
                        "level": level,
                        "key": key,
                        "severity": sev,
                        "state": "raised",
                        "value": value,
                        "band": band,
                        "message": f"{level} drift of {key} is {value:+.2%}, band {band:.2%}",
                    }
                )
            else:
                uow.rebalancing.update_alert(alert.id, sev, value, band)
        events.append(
            DriftAlertV1(
                account_id=account_id,
                as_of=as_of,
                level=level,
                key=key,
                drift=value,
                band=band,
                severity=sev,
                state=state,
            )
        )
    return events


# --------------------------------------------------------------------------- market signals
def _aligned(closes: Mapping[str, Sequence[float]], ids: Sequence[str]) -> FloatArray | None:
    """(t, k) closes of ``ids`` over their common most recent ``t`` days (None if t < 2)."""
    if not ids:
        return None
    t = min(len(closes.get(i, ())) for i in ids)
    if t < 2:
        return None
    return np.array([closes[i][-t:] for i in ids], dtype=np.float64).T


def _guard(kind: TriggerKind, fn: Callable[[], TriggerEvaluation]) -> TriggerEvaluation:
    """Run an evaluation; missing data becomes a not-fired evaluation saying why."""
    try:
        return fn()
    except InvalidInput as exc:
        return TriggerEvaluation(
            kind,
            False,
            f"not evaluated: {exc.detail}",
            {"error": exc.detail},
            DEFAULT_PRIORITY[kind],
        )


def _history_correlation(prices: FloatArray) -> FloatArray:
    r = np.diff(np.log(prices), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(r.T)
    corr = np.atleast_2d(np.nan_to_num(corr, nan=0.0))
    np.fill_diagonal(corr, 1.0)
    return corr


class _Signals:
    """Market-signal evaluations of one tick, cached per model / index (computed once each)."""

    def __init__(
        self,
        uow: UnitOfWork,
        closes: Mapping[str, Sequence[float]],
        models: _Models,
    ) -> None:
        self.uow = uow
        self.closes = dict(closes)
        self.models = models
        self.cache: dict[Any, TriggerEvaluation] = {}

    def _closes_of(self, ids: Sequence[str]) -> Mapping[str, Sequence[float]]:
        missing = [i for i in ids if i not in self.closes]
        if missing:
            self.closes.update(self.uow.market.closes(missing))
        return self.closes

    def correlation(self, model_id: str, s: SignalSettings) -> TriggerEvaluation | None:
        cfg = s.correlation_change
        if cfg is None:
            return None
        key = ("corr", model_id, cfg)
        if key not in self.cache:
            ids = sorted(k for k, w in self.models.record(model_id).model.targets.items() if w > 0)

            def run() -> TriggerEvaluation:
                if len(ids) < 2:
                    raise InvalidInput("the model has fewer than two instruments", ["targets"])
                px = _aligned(self._closes_of(ids), ids)
                if px is None:
                    raise InvalidInput("insufficient price history", ["prices"])
                if cfg.reference is None:
                    ref = _history_correlation(px)
                else:
                    rid, mat = cfg.reference
                    if not set(ids) <= set(rid):
                        raise InvalidInput(
                            "the reference correlation does not cover the model's instruments",
                            ["signals.correlation_change.reference"],
                        )
                    idx = [rid.index(i) for i in ids]
                    ref = np.asarray(mat, dtype=np.float64)[np.ix_(idx, idx)]
                ev = evaluate_correlation_change(
                    px, ref, window=cfg.window, threshold=cfg.threshold
                )
                inputs = {**ev.inputs, "model_id": model_id, "instruments": ids}
                inputs["reference"] = "history" if cfg.reference is None else "model"
                return dataclasses.replace(ev, inputs=inputs)

            self.cache[key] = _guard(TriggerKind.CORRELATION_CHANGE, run)
        return self.cache[key]

    def market(self, s: SignalSettings) -> TriggerEvaluation | None:
        cfg = s.market_condition
        if cfg is None:
            return None
        key = ("market", cfg)
        if key not in self.cache:

            def run() -> TriggerEvaluation:
                ids = [i for i in (cfg.index, cfg.vol_index) if i is not None]
                closes = self._closes_of(ids)
                index_px = np.array(closes.get(cfg.index, []) if cfg.index else [1.0])
                if index_px.size == 0:
                    raise InvalidInput(f"no stored prices of index {cfg.index}", ["index"])
                vix = None
                if cfg.vol_index is not None:
                    series = closes.get(cfg.vol_index, [])
                    if not series:
                        raise InvalidInput(f"no stored level of {cfg.vol_index}", ["vol_index"])
                    vix = float(series[-1])
                ev = evaluate_market_condition(
                    index_px,
                    drawdown_threshold=cfg.drawdown_threshold,
                    vol_index=vix,
                    vol_index_threshold=cfg.vol_index_threshold,
                )
                inputs = {**ev.inputs, "index": cfg.index, "vol_index_id": cfg.vol_index}
                return dataclasses.replace(ev, inputs=inputs)

            self.cache[key] = _guard(TriggerKind.MARKET_CONDITION, run)
        return self.cache[key]


def _drift_signals(book: BookDrift, i: int, exante_vol: FloatArray | None) -> dict[str, float]:
    sig = {
        "drift.sum_abs": float(book.sum_abs[i]),
        "drift.turnover": float(book.turnover[i]),
        "drift.max_abs": float(book.max_abs[i]),
    }
    if book.tracking_error is not None:
        sig["drift.tracking_error"] = float(book.tracking_error[i])
        sig["risk.tracking_error"] = float(book.tracking_error[i])
    for lvl, arr in book.levels.items():
        sig[f"drift.{lvl}.sum_abs"] = float(arr.sum_abs[i])
        sig[f"drift.{lvl}.max_abs"] = float(arr.max_abs[i])
    if exante_vol is not None:
        sig["risk.vol"] = float(exante_vol[i])
    return sig


_SIGNAL_INPUTS = {
    TriggerKind.VOLATILITY_REGIME: {
        "vol.short": "short_vol",
        "vol.long": "long_vol",
        "vol.ratio": "ratio",
    },
    TriggerKind.CORRELATION_CHANGE: {"corr.distance": "distance"},
    TriggerKind.MARKET_CONDITION: {"market.drawdown": "drawdown", "market.vol_index": "vol_index"},
    TriggerKind.RISK_BUDGET: {"risk.vol": "ex_ante_vol", "risk.tracking_error": "tracking_error"},
}


def _signals_from(evs: Sequence[TriggerEvaluation]) -> dict[str, float]:
    out: dict[str, float] = {}
    for e in evs:
        for name, field in _SIGNAL_INPUTS.get(e.kind, {}).items():
            v = e.inputs.get(field)
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                out[name] = float(v)
    return out


def _rule_evaluation(rule: RuleDefinition, signals: Mapping[str, float]) -> TriggerEvaluation:
    try:
        return evaluate_rule_trigger(rule, signals)
    except InvalidInput as exc:
        inputs = {"signals": {k: float(v) for k, v in sorted(signals.items())}, "error": exc.detail}
        return TriggerEvaluation(
            TriggerKind.RULE,
            False,
            f"rule {rule.name}: not evaluated, {exc.detail}",
            inputs,
            rule.priority,
            rule.name,
        )


# --------------------------------------------------------------------------- the book
@dataclasses.dataclass
class BookResult:
    """What one evaluation of a book did (for callers, tests and benchmarks)."""

    ts: datetime
    accounts: list[str] = dataclasses.field(default_factory=list)
    detailed: list[str] = dataclasses.field(default_factory=list)
    rebalances: dict[str, uuid.UUID] = dataclasses.field(default_factory=dict)
    alerts: int = 0
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)


def _summary_details(
    account_id: str, book: BookDrift, i: int, as_of: datetime | None
) -> dict[str, Any]:
    def summ(sum_abs: float, max_abs: float, max_key: str | None) -> dict[str, Any]:
        return {"sum_abs": sum_abs, "turnover": sum_abs / 2, "max_abs": max_abs, "max_key": max_key}

    summaries = {
        "instrument": summ(
            float(book.sum_abs[i]), float(book.max_abs[i]), book.instruments[int(book.argmax[i])]
        )
    }
    for lvl, arr in book.levels.items():
        summaries[lvl] = summ(
            float(arr.sum_abs[i]), float(arr.max_abs[i]), arr.groups[int(arr.argmax[i])]
        )
    return {
        "account_id": account_id,
        "as_of": as_of.isoformat() if as_of is not None else None,
        "detail": "summary",
        "summaries": summaries,
        "tracking_error": float(book.tracking_error[i])
        if book.tracking_error is not None
        else None,
    }


def evaluate_book(
    uow: UnitOfWork,
    accounts: Sequence[Account],
    ts: datetime | None = None,
    *,
    source: str = "market_data",
    triggers: bool = True,
    market_signals: bool = True,
) -> BookResult:
    """Snapshot drift, update alerts and evaluate triggers of ``accounts`` (one tenant).

    Drift of every account comes from one vectorised :func:`book_drift`; bands are screened
    over the whole book and a detailed per-key report is built only for accounts that breach a
    band, have an open alert or have several sleeves. ``ts`` defaults to the newest price used.
    Accounts whose instruments lack prices are skipped (``BookResult.skipped``). Does not commit.
    """
    models = _Models(uow)
    usable: list[Account] = []
    targets: list[dict[str, float]] = []
    result = BookResult(ts or datetime.now(UTC))
    for a in accounts:
        try:
            targets.append(blended_targets(a.sleeves, models.models(a)))
            usable.append(a)
        except (InvalidInput, NotFound) as exc:
            result.skipped[a.id] = str(exc)
    wanted = sorted(
        {k for a, t in zip(usable, targets, strict=True) for k in (*a.quantities(), *t)} - {CASH}
    )
    quotes = uow.market.latest(wanted)
    missing = {i for i in wanted if i not in quotes}
    if missing:
        keep = []
        for a, t in zip(usable, targets, strict=True):
            lacks = sorted(({*a.quantities(), *t} - {CASH}) & missing)
            if lacks:
                result.skipped[a.id] = f"no price for {', '.join(lacks)} yet"
            else:
                keep.append((a, t))
        usable, targets = [a for a, _ in keep], [t for _, t in keep]
    if not usable:
        return result
    layout = layout_of_accounts(usable, targets)
    insts = list(layout.columns[:-1])
    as_of = max((quotes[i].ts for i in insts), default=None)
    ts = ts or as_of or result.ts
    result.ts = ts
    prices = np.array([float(quotes[i].price) for i in insts] + [0.0])
    instruments = uow.instruments.get_many(insts)
    closes = uow.market.closes(insts) if insts else {}
    risk = None
    if insts:
        cov = estimate_covariance(insts, closes, {i: quotes[i].daily_volatility for i in insts})
        risk = CovarianceModel(tuple(insts), cov)
    W, nav = weights_matrix(layout, prices)
    groups = level_groups(layout.columns, instruments)
    book = book_drift(W, layout.targets, layout.columns, groups=groups, risk_model=risk)
    exante = np.sqrt(np.maximum(risk.quad_form_rows(W[:, :-1]), 0.0)) if risk is not None else None
    settings = [models.settings(a) for a in usable]
    all_bands = list(dict.fromkeys(b for s in settings for b in s.config.bands))
    screen = screen_bands(book, layout.targets, all_bands, groups)
    band_row = {b: k for k, b in enumerate(all_bands)}
    open_alerts = uow.rebalancing.open_alerts_many([a.id for a in usable])
    signals = _Signals(uow, closes, models)
    vol_paths = None
    if triggers and market_signals and any(s.config.signals.volatility_regime for s in settings):
        px = _aligned(closes, insts)
        if px is not None:
            vol_paths = value_paths(np.hstack([px, np.zeros((px.shape[0], 1))]), layout)
    snapshots: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    events: list[DriftAlertV1] = []
    as_of_date = (as_of or ts).date()
    for i, (acc, tgt, st) in enumerate(zip(usable, targets, settings, strict=True)):
        result.accounts.append(acc.id)
        bands = st.config.bands
        idx = [band_row[b] for b in bands]
        detailed = (
            bool(screen.breached[idx, i].any()) or acc.id in open_alerts or len(acc.sleeves) > 1
        )
        if detailed:
            result.detailed.append(acc.id)
            report = _detailed_report(acc, W[i], layout, tgt, instruments, models, book, i, as_of)
            band_evs = evaluate_bands(report, bands)
            new = update_alerts(
                uow,
                acc.id,
                report,
                bands,
                st.config.alerts,
                open_alerts.get(acc.id, []),
                as_of_date,
            )
            events += new
            result.alerts += len(new)
            details = report.to_dict()
        else:
            band_evs = [_screened(b, float(screen.value[band_row[b], i])) for b in bands]
            details = _summary_details(acc.id, book, i, as_of)
        te = float(book.tracking_error[i]) if book.tracking_error is not None else None
        snapshots.append(
            {
                "account_id": acc.id,
                "ts": ts,
                "nav": Decimal(str(round(float(nav[i]), 6))),
                "total_abs_drift": float(book.sum_abs[i]),
                "max_abs_drift": float(book.max_abs[i]),
                "tracking_error": te,
                "details": _finite(details),
            }
        )
        if not triggers:
            continue
        evs = [merge_band_evaluations(band_evs)] if band_evs else []
        sig_cfg = st.config.signals
        if market_signals:
            if sig_cfg.volatility_regime is not None:
                vr = sig_cfg.volatility_regime
                path = vol_paths[:, i] if vol_paths is not None else np.array([1.0])
                evs.append(
                    _guard(
                        TriggerKind.VOLATILITY_REGIME,
                        functools.partial(
                            evaluate_volatility_regime,
                            path,
                            short_window=vr.short_window,
                            long_window=vr.long_window,
                            ratio_threshold=vr.ratio_threshold,
                        ),
                    )
                )
            if st.main_model is not None and (c := signals.correlation(st.main_model, sig_cfg)):
                evs.append(c)
            if (mc := signals.market(sig_cfg)) is not None:
                evs.append(mc)
        if sig_cfg.risk_budget is not None and risk is not None:
            rb = sig_cfg.risk_budget
            weights = _weights_dict(acc, W[i], layout)
            sleeves = (
                sleeve_holdings(acc, weights, models.models(acc))
                if rb.contribution_tolerance is not None
                else []
            )
            evs.append(
                _guard(
                    TriggerKind.RISK_BUDGET,
                    functools.partial(
                        evaluate_risk_budget,
                        weights,
                        risk,
                        targets=tgt,
                        vol_budget=rb.vol_budget,
                        te_budget=rb.te_budget,
                        sleeves=sleeves,
                        contribution_tolerance=rb.contribution_tolerance or 0.0,
                    ),
                )
            )
        if st.rule is not None:
            sig = {**_drift_signals(book, i, exante), **_signals_from(evs)}
            evs.append(_rule_evaluation(st.rule, sig))
        extra = {"problems": list(st.problems)} if st.problems else None
        rid = decide(
            uow,
            acc.id,
            evs,
            ts=ts,
            source=source,
            policy=st.config.policy,
            out_rows=rows,
            extra=extra,
        )
        if rid is not None:
            result.rebalances[acc.id] = rid
    uow.rebalancing.add_drift_snapshots(snapshots)
    uow.rebalancing.add_trigger_evaluations(rows)
    uow.publish(
        *(
            new_event(EventType.DRIFT_ALERT, e, tenant_id=uow.tenant_id, key=e.account_id)
            for e in events
        )
    )
    return result


def _weights_dict(acc: Account, w: FloatArray, layout: BookLayout) -> dict[str, float]:
    pos = {c: j for j, c in enumerate(layout.columns)}
    out = {k: float(w[pos[k]]) for k in acc.quantities()}
    out[CASH] = float(w[layout.cash_col])
    return out


def _detailed_report(
    acc: Account,
    w: FloatArray,
    layout: BookLayout,
    targets: Mapping[str, float],
    instruments: Mapping[str, Instrument],
    models: _Models,
    book: BookDrift,
    i: int,
    as_of: datetime | None,
) -> DriftReport:
    weights = _weights_dict(acc, w, layout)
    report = account_drift(
        acc.id,
        weights,
        targets,
        instruments,
        sleeves=sleeve_holdings(acc, weights, models.models(acc)),
        as_of=as_of,
    )
    te = float(book.tracking_error[i]) if book.tracking_error is not None else None
    return dataclasses.replace(report, tracking_error=te)


def on_market_data(uow: UnitOfWork, event: MarketDataV1) -> None:
    """Store the bars, then re-evaluate every account (of every tenant) that they touch."""
    ts = ingest_market_data(uow, event)
    for tenant in uow.tenants.list():  # prices are global; accounts belong to tenants
        scoped = uow.scoped(tenant)
        ids = accounts_touched(scoped, [b.instrument for b in event.bars])
        if ids:
            evaluate_book(scoped, scoped.accounts.get_many(ids), ts, source="market_data")
    uow.commit()


def refresh_account(
    uow: UnitOfWork,
    account_id: str,
    ts: datetime | None = None,
    *,
    evaluate_triggers: bool = False,
) -> BookResult | None:
    """After a position change (settlement, portfolio-state update): store a drift snapshot of
    the account and update its alerts; with ``evaluate_triggers`` also evaluate its threshold,
    risk-budget and rule triggers (source ``position``). Market signals are not re-evaluated.

    ``ts`` defaults to the newest price of the account's instruments (the market clock), so a
    snapshot taken after a settlement replaces the one of the same market time. Does nothing
    (returns None) for an unknown account or one whose instruments have no price yet. Does not
    commit: call it inside the handler's unit of work, before its commit.
    """
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


# --------------------------------------------------------------------------- calendar
CALENDAR_KEY_SEPARATOR = "|"
"""A calendar evaluation's ``period_key`` is ``<schedule id>|<period>``, e.g.
``month-end|M:2024-03``, so ``uq_trigger_period (account_id, kind, period_key)`` holds one
fired evaluation per account, schedule and period."""


def run_calendar(uow: UnitOfWork, now: datetime) -> list[dict[str, Any]]:
    """The scheduler step: fire every due (account, schedule, period) that has not fired yet.

    Safe with several workers and across restarts (the state is the fired evaluations in the
    database): each worker inserts the fired evaluation with ``ON CONFLICT DO NOTHING`` on
    ``uq_trigger_period`` and only the one whose insert won requests the rebalance; the loser
    logs a not-fired evaluation saying so. A suppressed firing (e.g. market closed, open orders)
    is logged once per period and fires on a later run. Polls that find nothing due are not
    logged. Commits; returns one entry per fired period.
    """
    if now.tzinfo is None:
        raise InvalidInput("now must be timezone-aware", ["now"])
    fired: list[dict[str, Any]] = []
    for tenant in uow.tenants.list():
        fired += _run_calendar_tenant(uow.scoped(tenant), now)
    uow.commit()
    return fired


def _run_calendar_tenant(uow: UnitOfWork, now: datetime) -> list[dict[str, Any]]:
    models = _Models(uow)
    ids: set[str] = set()
    for rec in uow.models.list():
        models.records[rec.model.id] = rec
        try:
            has = bool(parse_config(rec.bands).schedules)
        except InvalidInput:
            has = False
        if has:
            ids.update(uow.accounts.list_ids(model_id=rec.model.id, limit=1_000_000))
    if not ids:
        return []
    accounts = uow.accounts.get_many(sorted(ids))
    due: list[tuple[Account, AccountSettings, list[tuple[Any, int, str]]]] = []
    keys: set[str] = set()
    for acc in accounts:
        st = models.settings(acc)
        items = []
        for sched, prio in st.config.schedules:
            d = latest_due(sched, now)
            if d is not None:
                pk = f"{sched.id}{CALENDAR_KEY_SEPARATOR}{d.period_key}"
                items.append((sched, prio, pk))
                keys.add(pk)
        if items:
            due.append((acc, st, items))
    done = uow.rebalancing.fired_periods(sorted(ids), str(TriggerKind.CALENDAR), sorted(keys))
    seen = uow.rebalancing.fired_periods(
        sorted(ids), str(TriggerKind.CALENDAR), sorted(keys), fired_only=False
    )
    out = []
    for acc, st, items in due:
        evs: list[TriggerEvaluation] = []
        pks: dict[int, str] = {}
        for sched, prio, pk in items:
            last = pk.split(CALENDAR_KEY_SEPARATOR, 1)[1] if (acc.id, pk) in done else None
            ev = evaluate_calendar(sched, now, last)
            if ev.fired:
                pks[len(evs)] = pk
                evs.append(dataclasses.replace(ev, priority=prio))
        if not evs:
            continue
        rows: list[dict[str, Any]] = []
        rid = decide(
            uow,
            acc.id,
            evs,
            ts=now,
            source="calendar",
            policy=st.config.policy,
            out_rows=rows,
            period_keys=pks,
        )
        # a suppression repeated on every poll is logged once per period
        rows = [r for r in rows if r["fired"] or (acc.id, r["period_key"]) not in seen]
        uow.rebalancing.add_trigger_evaluations(rows)
        if rid is not None:
            out.append(
                {
                    "tenant_id": uow.tenant_id,
                    "account_id": acc.id,
                    "period_keys": list(pks.values()),
                    "rebalance_id": rid,
                }
            )
    return out


# --------------------------------------------------------------------------- manual
def manual_request(
    uow: UnitOfWork,
    account_id: str,
    actor: str,
    note: str,
    priority: int,
    *,
    idempotency_key: str | None = None,
    commit: bool = False,
) -> tuple[uuid.UUID, bool]:
    """A manual rebalance request (``POST /v1/accounts/{id}/rebalance``): log a ``manual``
    evaluation with its inputs (who, note, priority, idempotency key) and open or join the
    account's rebalance with ``[note]`` as reason. Manual requests are never suppressed (they
    skip the cooldown; with orders still working they join the open rebalance).

    With an ``idempotency_key`` the evaluation's ``period_key`` is ``manual|<key>``: a repeat
    with the same key returns the first request's rebalance and does nothing more. Returns
    ``(rebalance id, created)`` like ``request_rebalance``.
    """
    from rebalancer.service_layer.handlers.recommending import request_rebalance

    uow.accounts.get(account_id)  # UnknownAccount -> 404
    ev = manual_trigger(actor, note, idempotency_key or "", priority)
    ts = _db_now(uow)
    pk = f"manual{CALENDAR_KEY_SEPARATOR}{idempotency_key}" if idempotency_key else None
    row = _row(
        account_id,
        ts,
        ev,
        extra={"priority": priority, "idempotency_key": idempotency_key, "source": "api"},
        period_key=pk,
    )
    eid = uow.rebalancing.add_trigger_evaluation_once(row)
    if eid is None:
        assert pk is not None
        prior = uow.rebalancing.fired_evaluation(account_id, str(TriggerKind.MANUAL), pk)
        if prior is not None and prior.rebalance_id is not None:
            if commit:
                uow.commit()
            return prior.rebalance_id, False
        raise InvalidInput(
            f"idempotency key {idempotency_key!r} is being used by a concurrent request",
            ["Idempotency-Key"],
        )
    rid, created = request_rebalance(uow, account_id, [note], priority, commit=False)
    uow.rebalancing.set_evaluations_rebalance([eid], rid)
    if commit:
        uow.commit()
    return rid, created


# --------------------------------------------------------------------------- drift view
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
