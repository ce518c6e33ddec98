"""Block orders: orders for the same instrument and side across accounts, sent to the venue
as one, and the allocation of the block's fills back to its children (whole lots, pro rata,
summing exactly).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.order_lifecycle import ZERO, ExecutionReport, Order, ReportKind, Side


@dataclass(frozen=True, slots=True)
class BlockChild:
    """One account's order inside a block."""

    order_id: str
    account_id: str
    quantity: Decimal


@dataclass(frozen=True, slots=True)
class BlockOrder:
    """Orders for the same instrument and side across accounts, sent to the venue as one."""

    block_id: str
    instrument: str
    side: Side
    children: tuple[BlockChild, ...]

    @property
    def quantity(self) -> Decimal:
        """Total shares of the block (sum of its children)."""
        return sum((c.quantity for c in self.children), ZERO)


def build_blocks(orders: Sequence[Order], block_id_prefix: str) -> list[BlockOrder]:
    """Group orders by ``(instrument, side)`` into blocks with ids ``{prefix}:{instrument}:{side}``.

    Children are sorted by account id; blocks by instrument, sells first. Each order's
    ``block_id`` is set to its block's id.
    """
    groups: dict[tuple[str, Side], list[Order]] = {}
    for o in orders:
        groups.setdefault((o.instrument, o.side), []).append(o)
    blocks = []
    for (inst, side), members in sorted(
        groups.items(), key=lambda kv: (kv[0][1] != Side.SELL, kv[0][0])
    ):
        block_id = f"{block_id_prefix}:{inst}:{side}"
        for o in members:
            o.block_id = block_id
        children = tuple(
            BlockChild(o.order_id, o.account_id, o.quantity)
            for o in sorted(members, key=lambda o: (o.account_id, o.order_id))
        )
        blocks.append(BlockOrder(block_id, inst, side, children))
    return blocks


def allocate_fill(block: BlockOrder, filled: Decimal, lot_size: int = 1) -> dict[str, Decimal]:
    """Allocate a block's filled shares to its children pro rata, in whole lots, summing exactly.

    Rule (documented, deterministic):

    1. each child gets its pro-rata share ``filled * q_i / Q`` rounded *down* to a multiple of
       ``lot_size`` (and never more than ``q_i``);
    2. the remaining whole lots go one lot at a time, round robin, to children ranked by
       largest fractional remainder (pro-rata share minus step 1), ties broken by account id
       then order id, skipping children without room for a whole lot;
    3. a final odd lot (``filled`` not a multiple of ``lot_size``) goes to the next child in
       that round robin with room (spilling over to the following ones if needed).

    Parameters
    ----------
    block
        The block order.
    filled
        Shares filled for the whole block, ``0 <= filled <= block.quantity``.
    lot_size
        Round lot in shares (``Instrument.lot_size``).

    Returns
    -------
    dict
        ``order_id -> shares``; values sum to ``filled`` and never exceed each child's quantity.
    """
    total = block.quantity
    if filled < 0 or filled > total:
        raise InvalidInput(
            f"block {block.block_id} filled {filled} of {total} shares", ["filled_quantity"]
        )
    if lot_size < 1:
        raise InvalidInput(f"lot size {lot_size} must be >= 1", ["lot_size"])
    lot = Decimal(lot_size)
    alloc: dict[str, Decimal] = {}
    frac: dict[str, Decimal] = {}
    for c in block.children:
        ideal = filled * c.quantity / total if total > 0 else ZERO
        base = min(c.quantity, (ideal // lot) * lot)
        alloc[c.order_id] = base
        frac[c.order_id] = ideal - base
    ranked = sorted(block.children, key=lambda c: (-frac[c.order_id], c.account_id, c.order_id))
    remainder = filled - sum(alloc.values(), ZERO)
    n, pos, misses = len(ranked), 0, 0
    while remainder >= lot and misses < n:  # round robin, one whole lot at a time
        c = ranked[pos % n]
        pos += 1
        if c.quantity - alloc[c.order_id] >= lot:
            alloc[c.order_id] += lot
            remainder -= lot
            misses = 0
        else:
            misses += 1
    for k in range(n):  # odd lot (or rooms smaller than a lot): continue the same cycle
        c = ranked[(pos + k) % n]
        give = min(remainder, c.quantity - alloc[c.order_id])
        alloc[c.order_id] += give
        remainder -= give
    return alloc


def child_fill_reports(
    block: BlockOrder, allocation: Mapping[str, Decimal], avg_price: Decimal
) -> list[ExecutionReport]:
    """Execution reports that book an allocation to the children at the block's average price.

    Report ids are ``{block_id}:{order_id}:alloc`` so re-running the allocation is idempotent.
    Children with a zero allocation get no report. A child whose allocation equals its quantity
    gets a ``FILL``, others a ``PARTIAL_FILL``; each carries its cumulative quantity.
    """
    reports = []
    for c in block.children:
        qty = allocation.get(c.order_id, ZERO)
        if qty <= 0:
            continue
        kind = ReportKind.FILL if qty == c.quantity else ReportKind.PARTIAL_FILL
        reports.append(
            ExecutionReport(
                report_id=f"{block.block_id}:{c.order_id}:alloc",
                order_id=c.order_id,
                kind=kind,
                fill_quantity=qty,
                fill_price=avg_price,
                cumulative_quantity=qty,
            )
        )
    return reports
