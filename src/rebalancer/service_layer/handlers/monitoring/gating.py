"""Coalesce, gate and request: turn the fired evaluations of one account into at most one
rebalance request, logging every evaluation (fired, not fired or suppressed)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from rebalancer.domain.monitoring_config import GatePolicy
from rebalancer.domain.triggers import TriggerEvaluation, coalesce, gate
from rebalancer.service_layer.handlers.monitoring._common import _db_now, _row
from rebalancer.service_layer.unit_of_work import UnitOfWork


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
    uow.accounts.lock(account_id)  # serializes with other triggers of the account
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
