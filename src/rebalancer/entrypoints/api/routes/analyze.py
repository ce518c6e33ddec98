"""The stateless ``POST /v1/analyze``: a portfolio, targets, market data and a policy in; trades
with lots, costs, taxes and risk out. Nothing is stored."""

from __future__ import annotations

from fastapi import APIRouter

from rebalancer.entrypoints.api.deps import ReadCtx
from rebalancer.entrypoints.api.errors import ERROR_RESPONSES, ApiError
from rebalancer.optimizer.response_schemas import AnalyzeResponse
from rebalancer.optimizer.schemas import AnalyzeRequest

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)


@router.post(
    "/analyze",
    response_model=AnalyzeResponse,
    tags=["analyze"],
    summary="Recommend trades for a portfolio (stateless)",
)
def analyze(body: AnalyzeRequest, ctx: ReadCtx) -> AnalyzeResponse:
    """Run the optimizer on the request.

    Targets must sum to 1 (cash included). Constraints that cannot all hold give 422
    ``infeasible`` naming the conflicting fields (e.g. ``body.policy.max_turnover``).
    """
    try:
        optimizer = ctx.runtime.optimizer
    except ImportError as exc:  # the optimizer package is not installed/importable
        raise ApiError(503, "unavailable", f"the optimizer is unavailable: {exc}") from None
    result: AnalyzeResponse = optimizer.analyze(body)
    return result
