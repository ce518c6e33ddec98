"""The write of a chunk: recommendations (``COPY``), statuses (one ``UPDATE``) and events."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from rebalancer.adapters.repositories import batch_results, bulk
from rebalancer.contracts import Decision, Envelope
from rebalancer.domain.errors import RebalancerError
from rebalancer.optimizer.response_schemas import AnalyzeResponse
from rebalancer.optimizer.schemas import AnalyzeRequest
from rebalancer.service_layer.handlers.batch.fanout import status_event
from rebalancer.service_layer.handlers.batch.inputs import SharedRiskModel
from rebalancer.service_layer.handlers.recommending import recommendation_created
from rebalancer.service_layer.unit_of_work import UnitOfWork

_WITHOUT_RISK_MODEL = {"risk_model"}


def store_chunk(
    uow: UnitOfWork,
    rows: Sequence[bulk.ChunkAccount],
    requests: Mapping[uuid.UUID, tuple[AnalyzeRequest, SharedRiskModel | None]],
    outcomes: Mapping[uuid.UUID, AnalyzeResponse | RebalancerError],
    new_risk_models: Sequence[SharedRiskModel],
) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """Write the chunk's results; returns the rebalance ids computed and failed.

    A request solved with a shared risk model is stored without it and references the stored
    one (``new_risk_models`` are inserted first, at most once per content); the others are
    stored whole.
    """
    t = uow.tenant_id
    batch_results.add_risk_models(
        uow.conn, t, [(s.id, s.as_of, s.content_json) for s in new_risk_models]
    )
    recs: list[tuple[Any, ...]] = []
    statuses: dict[uuid.UUID, str] = {}
    events: list[tuple[Envelope, str | None]] = []
    computed: list[uuid.UUID] = []
    failed: list[uuid.UUID] = []
    for c in rows:
        rid, account_id = c.rebalance_id, c.account.id
        out = outcomes[rid]
        if isinstance(out, RebalancerError):
            statuses[rid] = "failed"
            failed.append(rid)
            detail = f"{out.code}: {out.detail}"
            events.append((status_event(t, rid, account_id, "failed", c.status, detail), None))
            continue
        decision = str(out.decision)
        status = "pending_approval" if decision == Decision.REBALANCE else "no_trade"
        rec_id = uuid.uuid4()
        req, shared = requests[rid]
        request_json = (
            req.model_dump_json()
            if shared is None
            else req.model_dump_json(exclude=_WITHOUT_RISK_MODEL)
        )
        recs.append(
            (
                rec_id,
                rid,
                t,
                account_id,
                decision,
                status,
                Decimal(str(round(out.net_benefit, 6))),
                request_json,
                out.model_dump_json(),
                None if shared is None else shared.id,
            )
        )
        statuses[rid] = status
        computed.append(rid)
        env = recommendation_created(t, rec_id, account_id, rid, decision, out)
        events.append((env, None))
        events.append((status_event(t, rid, account_id, status, c.status), None))
    batch_results.copy_recommendations(uow.conn, recs)
    bulk.set_rebalance_statuses(uow.conn, statuses)
    bulk.add_outbox_many(uow.conn, events)
    return computed, failed
