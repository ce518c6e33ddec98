"""``GET /v1/metrics/success``: the seed's success metrics computed from stored data, with the
effectiveness, cost, attribution and frequency figures of performance monitoring."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, ValidationError

from rebalancer.adapters.repositories.performance import PerformanceRepository
from rebalancer.analytics import performance as perf
from rebalancer.entrypoints.api.deps import ReadCtx
from rebalancer.entrypoints.api.errors import ERROR_RESPONSES
from rebalancer.optimizer.schemas import AnalyzeRequest, AnalyzeResponse

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)


class MetricOut(BaseModel):
    value: float | None = Field(description="Fraction (0.02 = 2 %); null without data.")
    target: float
    met: bool | None = Field(description="Whether the target is met; null without data.")
    sample: int = Field(description="Accounts, graded decisions or terminal orders counted.")


class SuccessMetrics(BaseModel):
    """Success metrics over the window, plus monitoring figures (see docs/backtesting.md)."""

    window_days: int
    average_drift: MetricOut = Field(description="Mean account drift; target < 2 %.")
    optimal_decisions: MetricOut = Field(description="Share within 0.5 %; target > 90 %.")
    successful_executions: MetricOut = Field(description="Filled / terminal; target > 95 %.")
    effectiveness: dict[str, float | int | None]
    cost: dict[str, float | int | None] = Field(
        description="Estimated spread + fees, impact and tax of executed recommendations "
        "against the realized implementation shortfall of their fills (currency and bps)."
    )
    attribution: dict[str, float | int]
    frequency: dict[str, float | int | None]
    band_sweep: list[dict[str, float | None]] = Field(
        description="Per absolute band width: snapshots beyond it and band entries per "
        "account per 30 days on the observed drift."
    )


def _out(m: perf.Metric) -> MetricOut:
    return MetricOut(value=m.value, target=m.target, met=m.met, sample=m.sample)


@router.get(
    "/metrics/success",
    response_model=SuccessMetrics,
    tags=["monitoring"],
    summary="Average drift, optimal decisions, successful executions (from stored data)",
)
def success_metrics(
    ctx: ReadCtx,
    days: Annotated[int, Query(ge=1, le=3650, description="Window (days).")] = 30,
    sample: Annotated[
        int, Query(ge=0, le=200, description="Recent recommendations re-solved to grade.")
    ] = 20,
) -> SuccessMetrics:
    """Compute the metrics of the caller's tenant over the last ``days`` days.

    Grading re-solves up to ``sample`` recent recommendations with the optimizer (tens of
    milliseconds each), so a larger sample answers more slowly.
    """
    since = datetime.now(UTC) - timedelta(days=days)
    with ctx.uow() as uow:
        repo = PerformanceRepository(uow.conn, ctx.principal.tenant_id)
        drifts = repo.latest_drifts(since)
        recs = repo.recommendations(since, limit=1000)
        statuses = repo.order_statuses(since)
        fills = repo.fills(since)
        bands = repo.band_counts(since, perf.SWEEP_BAND_WIDTHS)
        quotes = uow.market.latest({f.instrument for f in fills}) if fills else {}
    grades: list[bool | None] = []
    for rec in recs[:sample]:
        try:
            req = AnalyzeRequest.model_validate(rec.request)
            resp = AnalyzeResponse.model_validate(rec.response)
        except ValidationError:
            grades.append(None)
            continue
        grades.append(perf.grade(req, resp, ctx.runtime.optimizer))
    rebalances = [(r.account_id, r.created_at) for r in recs if r.decision == "rebalance"]
    return SuccessMetrics(
        window_days=days,
        average_drift=_out(perf.average_drift(drifts)),
        optimal_decisions=_out(perf.optimal_share(grades)),
        successful_executions=_out(perf.successful_executions(statuses)),
        effectiveness=perf.effectiveness([r.response for r in recs]),
        cost=perf.cost_analysis([r.response for r in recs], fills),
        attribution=perf.attribution(fills, {k: float(q.price) for k, q in quotes.items()}),
        frequency=perf.frequency(rebalances, len(drifts) or len({a for a, _ in rebalances})),
        band_sweep=perf.band_sweep(bands, days),
    )
