"""Execution quality reports, and realized costs fed back into the optimizer's cost model.

Feedback loop
-------------
When an order with fills finishes, its implementation shortfall (bps against the arrival
price) updates the instrument's realized half-spread by exponential smoothing
(:func:`~rebalancer.domain.execution.update_half_spread`, stored in ``cost_estimates``).
:func:`realized_quotes` then replaces the quoted ``half_spread_bps`` of the optimizer request
(``recommending.build_request``) once the estimate rests on
:data:`~rebalancer.domain.execution.COST_MIN_OBSERVATIONS` orders, so instruments that keep
costing more than the model expects are traded less eagerly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import Any, TypeVar

from rebalancer.adapters.repositories.execution import ExecutionRepository
from rebalancer.domain import quality as q
from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.execution import COST_MIN_OBSERVATIONS, update_half_spread
from rebalancer.domain.orders import Order, OrderStatus, Side, implementation_shortfall_bps
from rebalancer.service_layer.unit_of_work import UnitOfWork

Q = TypeVar("Q")


def record_realized_cost(uow: UnitOfWork, order: Order, estimated_cost_bps: float | None) -> None:
    """Feed a finished order's shortfall into its instrument's realized half-spread (once).

    Called when the order turns terminal (which happens once, under its row lock); orders
    without fills or arrival price teach nothing and are skipped.
    """
    bps = implementation_shortfall_bps(order)
    if bps is None or order.filled_quantity <= 0:
        return
    repo = ExecutionRepository(uow.conn, uow.tenant_id)
    row = repo.lock_cost_estimate(order.instrument)
    prior = row.half_spread_bps if row is not None else (estimated_cost_bps or 0.0)
    n = row.observations if row is not None else 0
    new, count = update_half_spread(prior, n, bps)
    repo.save_cost_estimate(order.instrument, new, count, bps)


def realized_quotes(uow: UnitOfWork, quotes: Mapping[str, Q]) -> dict[str, Q]:
    """``quotes`` with ``half_spread_bps`` replaced by the realized estimate where it is ripe.

    ``quotes`` are :class:`~rebalancer.adapters.repositories.reference.Quote` objects (any
    dataclass with a ``half_spread_bps`` field).
    """
    estimates = ExecutionRepository(uow.conn, uow.tenant_id).cost_estimates(list(quotes))
    out: dict[str, Q] = {}
    for inst, quote in quotes.items():
        est = estimates.get(inst)
        if est is not None and est.observations >= COST_MIN_OBSERVATIONS:
            quote = dataclasses.replace(quote, half_spread_bps=est.half_spread_bps)  # type: ignore[type-var]
        out[inst] = quote
    return out


def _outcome(row: Any) -> q.OrderOutcome:
    return q.OrderOutcome(
        order_id=str(row.id),
        instrument=row.instrument,
        day=row.day,
        side=Side(row.side),
        requested=Decimal(row.requested_quantity or row.quantity),
        filled=Decimal(row.filled_quantity),
        avg_fill_price=row.avg_fill_price,
        arrival_price=row.arrival_price,
        estimated_cost_bps=row.estimated_cost_bps,
        finished=OrderStatus(row.status).terminal,
    )


def _stats_view(s: q.QualityStats) -> dict[str, Any]:
    return {
        "key": s.key,
        "orders": s.orders,
        "filled_orders": s.filled_orders,
        "requested_quantity": str(s.requested_quantity),
        "filled_quantity": str(s.filled_quantity),
        "fill_rate": s.fill_rate,
        "shortfall_bps": s.shortfall_bps,
        "shortfall_currency": str(s.shortfall_currency),
        "estimated_cost_bps": s.estimated_cost_bps,
        "slippage_bps": s.slippage_bps,
    }


def _completion_view(c: q.CompletionStats) -> dict[str, Any]:
    return {
        "key": c.key,
        "complete": c.complete,
        "partially_complete": c.partially_complete,
        "failed": c.failed,
        "completion_rate": c.completion_rate,
        "meets_target": c.meets_target,
    }


def execution_quality(uow: UnitOfWork, start: date, end: date) -> dict[str, Any]:
    """Execution quality of the tenant's orders created on ``start..end`` (UTC days).

    Returns a JSON-ready dict: ``total``, ``by_instrument`` and ``by_day`` order statistics
    (shortfall and slippage in bps, fill rate, shortfall in currency), ``completion`` of the
    rebalances that finished in the window (total and ``by_day``), the target and the
    realized cost estimates per instrument. Formulas: :mod:`rebalancer.domain.quality`.

    Raises
    ------
    InvalidInput
        ``start`` after ``end``.
    """
    if start > end:
        raise InvalidInput(f"start {start} is after end {end}", ["start", "end"])
    repo = ExecutionRepository(uow.conn, uow.tenant_id)
    orders = [_outcome(r) for r in repo.orders_between(start, end)]
    rebs = repo.finished_rebalances_between(start, end)
    days = sorted({r.day for r in rebs})
    instruments = sorted({o.instrument for o in orders})
    estimates = repo.cost_estimates(instruments)
    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "total": _stats_view(q.stats("total", orders)),
        "by_instrument": [_stats_view(s) for s in q.grouped(orders, lambda o: o.instrument)],
        "by_day": [_stats_view(s) for s in q.grouped(orders, lambda o: o.day.isoformat())],
        "completion": {
            "target": q.COMPLETION_TARGET,
            "total": _completion_view(q.completion("total", [r.status for r in rebs])),
            "by_day": [
                _completion_view(
                    q.completion(d.isoformat(), [r.status for r in rebs if r.day == d])
                )
                for d in days
            ],
        },
        "cost_estimates": [
            {
                "instrument": i,
                "half_spread_bps": estimates[i].half_spread_bps,
                "observations": estimates[i].observations,
                "in_use": estimates[i].observations >= COST_MIN_OBSERVATIONS,
            }
            for i in instruments
            if i in estimates
        ],
    }
