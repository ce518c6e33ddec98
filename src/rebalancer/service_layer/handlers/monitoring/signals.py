"""Market signals from stored prices: volatility regime, correlation change, market
condition and risk budget helpers, and the signals a trigger rule sees."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from rebalancer.domain.drift import BookDrift, FloatArray
from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.monitoring_config import SignalSettings
from rebalancer.domain.rules import RuleDefinition
from rebalancer.domain.triggers import (
    DEFAULT_PRIORITY,
    TriggerEvaluation,
    TriggerKind,
    evaluate_correlation_change,
    evaluate_market_condition,
    evaluate_rule_trigger,
)
from rebalancer.service_layer.handlers.monitoring.settings import _Models
from rebalancer.service_layer.unit_of_work import UnitOfWork


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
    """Correlation of the daily log returns of ``prices`` (t, n); the identity when there are
    fewer than two returns (no information yet, and no degrees of freedom to estimate it)."""
    r = np.diff(np.log(prices), axis=0)
    if r.ndim != 2 or r.shape[0] < 2:
        return np.eye(prices.shape[1] if prices.ndim == 2 else 1)
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
