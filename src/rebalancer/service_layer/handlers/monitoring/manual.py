"""A manual rebalance request from the API, logged as a ``manual`` evaluation."""

from __future__ import annotations

import uuid

from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.triggers import TriggerKind, manual_trigger
from rebalancer.service_layer.handlers.monitoring._common import _db_now, _row
from rebalancer.service_layer.handlers.monitoring.calendar import CALENDAR_KEY_SEPARATOR
from rebalancer.service_layer.unit_of_work import UnitOfWork


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

    uow.accounts.require(account_id)  # UnknownAccount -> 404
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
