"""Drift bands and alerts: merged threshold evaluations, screened bands and alerts with
hysteresis."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from rebalancer.contracts import DriftAlertV1
from rebalancer.domain.drift import DriftReport
from rebalancer.domain.monitoring_config import AlertSettings
from rebalancer.domain.triggers import (
    AlertChange,
    AlertPolicy,
    Band,
    Severity,
    TriggerEvaluation,
    TriggerKind,
    next_severity,
)
from rebalancer.service_layer.handlers.monitoring._common import THRESHOLD_PRIORITY
from rebalancer.service_layer.unit_of_work import UnitOfWork

_SEVERITY_NAME = {Severity.WARNING: "warning", Severity.CRITICAL: "critical"}
_SEVERITY_OF = {"warning": Severity.WARNING, "critical": Severity.CRITICAL, "info": Severity.NONE}


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
