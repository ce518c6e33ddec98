"""Orders: the order state machine, execution reports, order generation and block orders.

The code lives in :mod:`rebalancer.domain.order_lifecycle` (statuses, the state machine,
execution reports), :mod:`rebalancer.domain.order_generation` (orders from trades) and
:mod:`rebalancer.domain.blocks` (block orders and fill allocation); this module re-exports
their names so ``from rebalancer.domain.orders import ...`` keeps working.

Units
-----
Quantities are :class:`~decimal.Decimal` shares; prices are :class:`~decimal.Decimal` account
currency per share; basis points (``_bps``) are 1/10,000.

See :mod:`rebalancer.domain.order_lifecycle` for the state machine and late reports.
"""

from __future__ import annotations

from rebalancer.domain.blocks import (
    BlockChild,
    BlockOrder,
    allocate_fill,
    build_blocks,
    child_fill_reports,
)
from rebalancer.domain.order_generation import (
    Trade,
    generate_orders,
    limit_price_for,
)
from rebalancer.domain.order_lifecycle import (
    CENT,
    TERMINAL,
    TRANSITIONS,
    ZERO,
    ExecutionReport,
    Lots,
    Order,
    OrderStatus,
    OrderType,
    ReportKind,
    ReportOutcome,
    Side,
    TimeInForce,
    apply_report,
    implementation_shortfall_bps,
    mark_sent,
    order_id_for,
    request_cancel,
    route_report,
    transition,
)

__all__ = [
    "CENT",
    "TERMINAL",
    "TRANSITIONS",
    "ZERO",
    "BlockChild",
    "BlockOrder",
    "ExecutionReport",
    "Lots",
    "Order",
    "OrderStatus",
    "OrderType",
    "ReportKind",
    "ReportOutcome",
    "Side",
    "TimeInForce",
    "Trade",
    "allocate_fill",
    "apply_report",
    "build_blocks",
    "child_fill_reports",
    "generate_orders",
    "implementation_shortfall_bps",
    "limit_price_for",
    "mark_sent",
    "order_id_for",
    "request_cancel",
    "route_report",
    "transition",
]
