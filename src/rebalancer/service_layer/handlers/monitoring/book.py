"""One evaluation of a book of accounts: vectorised drift, band screen, detailed reports
where needed, snapshots, alerts and every trigger kind."""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import numpy as np

from rebalancer.contracts import DriftAlertV1, EventType, new_event
from rebalancer.domain.book import (
    BookLayout,
    layout_of_accounts,
    level_groups,
    screen_bands,
    value_paths,
    weights_matrix,
)
from rebalancer.domain.drift import (
    BookDrift,
    CovarianceModel,
    DriftReport,
    FloatArray,
    account_drift,
    book_drift,
)
from rebalancer.domain.errors import InvalidInput, NotFound
from rebalancer.domain.model import CASH, Account, Instrument, blended_targets
from rebalancer.domain.triggers import (
    TriggerKind,
    evaluate_bands,
    evaluate_risk_budget,
    evaluate_volatility_regime,
)
from rebalancer.service_layer.handlers.monitoring._common import _finite, sleeve_holdings
from rebalancer.service_layer.handlers.monitoring.alerts import (
    _screened,
    merge_band_evaluations,
    update_alerts,
)
from rebalancer.service_layer.handlers.monitoring.gating import decide
from rebalancer.service_layer.handlers.monitoring.settings import _Models
from rebalancer.service_layer.handlers.monitoring.signals import (
    _aligned,
    _drift_signals,
    _guard,
    _rule_evaluation,
    _Signals,
    _signals_from,
)
from rebalancer.service_layer.price_history import cached_covariance
from rebalancer.service_layer.unit_of_work import UnitOfWork


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
    closes: Mapping[str, Sequence[float]] = {}
    risk = None
    if insts:  # reused while no instrument has a newer bar (price_history)
        newest = tuple(quotes[i].ts for i in insts)
        vols = {i: quotes[i].daily_volatility for i in insts}
        closes, cov = cached_covariance(uow, insts, newest, vols)
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
