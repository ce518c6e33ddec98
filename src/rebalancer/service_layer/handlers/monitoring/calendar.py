"""The calendar scheduler step: fire each due (account, schedule, period) at most once."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from rebalancer.domain.calendar import latest_due
from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.model import Account
from rebalancer.domain.monitoring_config import parse_config
from rebalancer.domain.triggers import TriggerEvaluation, TriggerKind, evaluate_calendar
from rebalancer.service_layer.handlers.monitoring.gating import decide
from rebalancer.service_layer.handlers.monitoring.settings import AccountSettings, _Models
from rebalancer.service_layer.unit_of_work import UnitOfWork

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
