"""From a rebalance request to a stored recommendation: build the optimizer's request from the
account's stored state, solve, store the answer and announce it."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol

from rebalancer.analytics.requests import DEFAULT_ADV_SHARES as DEFAULT_ADV_SHARES
from rebalancer.analytics.requests import DEFAULT_HALF_SPREAD_BPS as DEFAULT_HALF_SPREAD_BPS
from rebalancer.analytics.requests import LossSale, involved_instruments, make_request
from rebalancer.contracts import (
    Decision,
    Envelope,
    EventType,
    RebalanceTriggeredV1,
    RecommendationCreatedV1,
    StatusEntity,
    StatusUpdatedV1,
    TradeV1,
    new_event,
)
from rebalancer.domain.errors import RebalancerError
from rebalancer.domain.model import Account
from rebalancer.optimizer.response_schemas import AnalyzeResponse
from rebalancer.optimizer.schemas import AnalyzeRequest, Policy
from rebalancer.service_layer.handlers.quality import realized_quotes
from rebalancer.service_layer.unit_of_work import UnitOfWork


class Optimizer(Protocol):
    """What the service needs of the recommendation engine."""

    def analyze(self, request: AnalyzeRequest) -> AnalyzeResponse: ...


DEFAULT_RISK_AVERSION = 50.0
"""gamma for stored rebalances. With the annual covariance of ``estimate_covariance`` the tracking
term costs ``gamma * TE^2`` of NAV: an ex-ante tracking error of 1 % costs 0.5 % of NAV, so
drift of a few percent outweighs small loss-harvesting gains, while losses are still harvested
where a substitute keeps the exposure. Measured on the sample book: gamma 1 let harvesting push
drift up, gamma 20-100 brings it to 1-3 % (see docs/optimizer.md)."""


def default_policy() -> Policy:
    """Policy used for stored rebalances (per-model policies are a later extension)."""
    return Policy(risk_aversion=DEFAULT_RISK_AVERSION, min_trade_value=50.0, min_net_benefit=1.0)


def build_request(
    uow: UnitOfWork, account: Account, as_of: date, policy: Policy | None = None
) -> AnalyzeRequest:
    """The optimizer request for ``account`` from stored models, lots, cash and market data.

    Raises
    ------
    InvalidInput
        When an instrument held or targeted has no price yet.
    """
    models = {
        k: r.model for k, r in uow.models.get_many(s.model_id for s in account.sleeves).items()
    }
    _, ids = involved_instruments(account, models)
    pol = policy or default_policy()
    losses = uow.tax.recent_loss_sales(account.id, as_of, pol.wash_sale_days)
    return make_request(
        account,
        models,
        uow.instruments.get_many(ids),
        realized_quotes(uow, uow.market.latest(ids)),  # realized costs feed back
        uow.market.closes(ids),
        as_of,
        pol,
        # a loss sold in the window must not be washed by buying its group back now
        recent_loss_sales=[LossSale(instrument=i, date=d) for i, d in losses],
    )


def request_rebalance(
    uow: UnitOfWork,
    account_id: str,
    reasons: list[str],
    priority: int,
    *,
    commit: bool = True,
) -> tuple[uuid.UUID, bool]:
    """Open a rebalance for the account, or join the one already open (coalescing).

    Returns the rebalance id and whether it is new. A new one emits ``rebalance_triggered``,
    which a worker consumes to compute the recommendation.
    """
    uow.accounts.lock(account_id)  # serializes concurrent triggers of one account
    open_row = uow.rebalancing.open_rebalance(account_id)
    if open_row is not None:
        uow.rebalancing.merge_rebalance_reasons(open_row.id, reasons, priority)
        if commit:
            uow.commit()
        return open_row.id, False
    rid = uow.rebalancing.create_rebalance(account_id, "requested", reasons, priority)
    as_of = uow.market.as_of() or date.today()
    uow.publish(
        new_event(
            EventType.REBALANCE_TRIGGERED,
            RebalanceTriggeredV1(
                account_id=account_id,
                rebalance_id=str(rid),
                reasons=reasons,
                priority=priority,
                as_of=as_of,
            ),
            tenant_id=uow.tenant_id,
            key=account_id,
            correlation_id=str(rid),
        ),
        _status_event(uow, StatusEntity.REBALANCE, str(rid), account_id, "requested", None),
    )
    if commit:
        uow.commit()
    return rid, True


def requeue_stalled(uow: UnitOfWork, published_before: datetime) -> list[uuid.UUID]:
    """Publish ``rebalance_triggered`` again for requested rebalances nobody picked up.

    A trigger's event can be stranded in the broker: pulsar-lite keeps the unacknowledged
    messages of a consumer whose process was SIGKILLed mid-delivery until the broker restarts
    (docs/reliability.md). Every single-account rebalance still ``requested`` whose event was
    last published before ``published_before`` gets a new event (same rebalance id, reasons
    as merged so far, priority; today's ``as_of``) and a fresh ``published_at``, so it is
    requeued at most once per timeout. Triggers that joined the rebalance meanwhile
    (coalescing) published nothing and do not postpone it. Safe to repeat: :func:`recommend`
    acts only on a rebalance still ``requested`` (row-locked), so a stranded original
    delivered later does nothing. Commits once; returns the ids requeued.
    """
    as_of = uow.market.as_of() or date.today()
    ids: list[uuid.UUID] = []
    for row in uow.rebalancing.stalled_requests(published_before):
        uow.publish(
            new_event(
                EventType.REBALANCE_TRIGGERED,
                RebalanceTriggeredV1(
                    account_id=row.account_id,
                    rebalance_id=str(row.id),
                    reasons=list(row.reasons),
                    priority=row.priority,
                    as_of=as_of,
                ),
                tenant_id=uow.tenant_id,
                key=row.account_id,
                correlation_id=str(row.id),
            )
        )
        uow.rebalancing.mark_published(row.id)
        ids.append(row.id)
    uow.commit()
    return ids


def _status_event(
    uow: UnitOfWork,
    entity: StatusEntity,
    entity_id: str,
    account_id: str,
    status: str,
    previous: str | None,
    detail: str | None = None,
    correlation_id: str | None = None,
) -> Any:
    return new_event(
        EventType.STATUS_UPDATED,
        StatusUpdatedV1(
            entity=entity,
            entity_id=entity_id,
            account_id=account_id,
            status=status,
            previous=previous,
            detail=detail,
        ),
        tenant_id=uow.tenant_id,
        key=account_id,
        correlation_id=correlation_id or entity_id,
    )


def recommend(uow: UnitOfWork, optimizer: Optimizer, rebalance_id: uuid.UUID) -> uuid.UUID | None:
    """Compute and store the recommendation of a requested rebalance (idempotent).

    Returns the recommendation id, or None if the rebalance already has one or failed. A
    rebalance whose request cannot be built (no price yet for an instrument it holds or
    targets) or answered (infeasible limits, a failed re-check) ends ``failed`` with the reason
    in its status event: a later trigger starts a new one, and the event is not dead-lettered.
    """
    reb = uow.rebalancing.get_rebalance(rebalance_id, lock=True)
    if reb.status != "requested":
        return None
    account = uow.accounts.get(reb.account_id, lock=True)
    as_of = uow.market.as_of() or date.today()
    try:
        request = build_request(uow, account, as_of)
        response = optimizer.analyze(request)
    except RebalancerError as exc:
        uow.rebalancing.set_rebalance_status(rebalance_id, "failed")
        uow.publish(
            _status_event(
                uow,
                StatusEntity.REBALANCE,
                str(rebalance_id),
                account.id,
                "failed",
                reb.status,
                f"{exc.code}: {exc.detail}",
            )
        )
        uow.commit()
        return None
    decision = str(response.decision)
    status = "pending_approval" if decision == Decision.REBALANCE else "no_trade"
    rec_id = uow.rebalancing.add_recommendation(
        rebalance_id,
        account.id,
        decision,
        status,
        Decimal(str(round(response.net_benefit, 6))),
        request.model_dump(mode="json"),
        response.model_dump(mode="json"),
    )
    uow.rebalancing.set_rebalance_status(rebalance_id, status)
    uow.publish(
        recommendation_created(uow.tenant_id, rec_id, account.id, rebalance_id, decision, response),
        _status_event(
            uow, StatusEntity.REBALANCE, str(rebalance_id), account.id, status, reb.status
        ),
    )
    uow.commit()
    return rec_id


def recommendation_created(
    tenant_id: str,
    recommendation_id: uuid.UUID,
    account_id: str,
    rebalance_id: uuid.UUID,
    decision: str,
    response: AnalyzeResponse,
) -> Envelope:
    """The ``recommendation_created`` event of a stored answer (shares, currency rounded to
    cents), keyed by account and correlated with the rebalance."""
    return new_event(
        EventType.RECOMMENDATION_CREATED,
        RecommendationCreatedV1(
            recommendation_id=str(recommendation_id),
            account_id=account_id,
            rebalance_id=str(rebalance_id),
            decision=decision,
            trades=[
                TradeV1(
                    instrument=t.instrument,
                    side=str(t.side),
                    quantity=Decimal(str(t.quantity)),
                    value=Decimal(str(round(t.value, 2))),
                )
                for t in response.trades
            ],
            net_benefit=Decimal(str(round(response.net_benefit, 2))),
        ),
        tenant_id=tenant_id,
        key=account_id,
        correlation_id=str(rebalance_id),
    )


def recommendation_view(row: Any) -> Mapping[str, Any]:
    """JSON view of a stored recommendation."""
    return {
        "id": str(row.id),
        "rebalance_id": str(row.rebalance_id),
        "account_id": row.account_id,
        "decision": row.decision,
        "status": row.status,
        "net_benefit": float(row.net_benefit),
        "created_at": row.created_at.isoformat(),
        "approved_at": row.approved_at.isoformat() if row.approved_at else None,
        "approved_by": row.approved_by,
        "analysis": row.response,
    }
