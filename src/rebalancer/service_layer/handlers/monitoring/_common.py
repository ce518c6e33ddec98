"""Helpers shared by the monitoring modules: evaluation rows, JSON-safe values, the
database clock and the attribution of pooled holdings to sleeves."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa

from rebalancer.domain.drift import SleeveHoldings
from rebalancer.domain.model import Account, ModelPortfolio
from rebalancer.domain.triggers import DEFAULT_PRIORITY, TriggerEvaluation, TriggerKind
from rebalancer.service_layer.unit_of_work import UnitOfWork

THRESHOLD_PRIORITY = DEFAULT_PRIORITY[TriggerKind.THRESHOLD]


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
