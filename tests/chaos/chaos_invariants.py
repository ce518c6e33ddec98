"""The invariants checked after a chaos run, against the database and the venue's own log.

Each check returns human-readable violations (empty when it holds), so a failing run says
exactly what was lost or duplicated.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from rebalancer.sample_book import SampleBook

CASH_TOLERANCE = Decimal("0.01")


def _rows(engine: sa.Engine, query: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(query), params).all())


def orders_match_approvals(
    engine: sa.Engine, tenant: str, approvals: dict[str, list[str]]
) -> list[str]:
    """Every approved recommendation has exactly the orders its approval listed (no order lost,
    none created twice, none created for a recommendation the client did not approve), each
    one a trade of the recommendation."""
    bad: list[str] = []
    approved = {
        str(r.id): r
        for r in _rows(
            engine,
            "SELECT id, response FROM recommendations WHERE tenant_id = :t AND status = 'approved'",
            t=tenant,
        )
    }
    if set(approved) != set(approvals):
        bad.append(
            f"approved in the database but not by the client: {set(approved) - set(approvals)}; "
            f"approved by the client but not in the database: {set(approvals) - set(approved)}"
        )
    orders: dict[str, list[Any]] = defaultdict(list)
    for o in _rows(
        engine,
        "SELECT id, recommendation_id, instrument, side FROM orders WHERE tenant_id = :t",
        t=tenant,
    ):
        orders[str(o.recommendation_id)].append(o)
    for rid, listed in approvals.items():
        have = orders.get(rid, [])
        if sorted(str(o.id) for o in have) != sorted(listed):
            bad.append(f"recommendation {rid}: orders {[str(o.id) for o in have]} != {listed}")
        per_instrument = defaultdict(int)
        for o in have:
            per_instrument[o.instrument] += 1
        bad += [f"{rid}: {n} orders for {i}" for i, n in per_instrument.items() if n != 1]
        if rid in approved:
            trades = {
                (t["instrument"], t["side"])
                for t in approved[rid].response.get("trades", [])
                if Decimal(str(t["quantity"])) > 0
            }
            bad += [
                f"{rid}: order {o.id} ({o.side} {o.instrument}) is not a trade of it"
                for o in have
                if (o.instrument, o.side) not in trades
            ]
    stray = set(orders) - set(approvals)
    if stray:
        bad.append(f"orders of recommendations nobody approved: {sorted(stray)}")
    return bad


def fills_applied_once(engine: sa.Engine, tenant: str, fills: list[dict[str, Any]]) -> list[str]:
    """Every fill the venue produced is recorded exactly once and counted once in its order's
    filled quantity, and settled exactly once at its quantity and price; nothing else is."""
    bad: list[str] = []
    venue = {f["report_id"]: f for f in fills}
    recorded = {
        r.report_id: r
        for r in _rows(
            engine,
            "SELECT report_id, order_id, fill_quantity, fill_price, outcome FROM executions "
            "WHERE tenant_id = :t AND fill_quantity > 0",
            t=tenant,
        )
    }
    if set(recorded) != set(venue):
        bad.append(
            f"fills lost: {sorted(set(venue) - set(recorded))[:10]}; "
            f"fills nobody made: {sorted(set(recorded) - set(venue))[:10]}"
        )
    unknown = _rows(
        engine,
        "SELECT report_id FROM executions WHERE tenant_id = :t AND outcome = 'rejected_unknown'",
        t=tenant,
    )
    if unknown:
        bad.append(f"reports for orders the service does not know: {unknown[:10]}")
    per_order: dict[str, Decimal] = defaultdict(Decimal)
    for f in venue.values():  # a late fill (after the order ended) still counts its shares
        per_order[f["order_id"]] += Decimal(f["quantity"])
    for o in _rows(engine, "SELECT id, filled_quantity FROM orders WHERE tenant_id = :t", t=tenant):
        want = per_order.get(str(o.id), Decimal(0))
        if Decimal(o.filled_quantity) != want:
            bad.append(f"order {o.id}: filled {o.filled_quantity}, the venue filled {want}")
    settlements = defaultdict(list)
    for s in _rows(
        engine,
        "SELECT report_id, quantity, price, status FROM settlements WHERE tenant_id = :t",
        t=tenant,
    ):
        settlements[s.report_id].append(s)
    for rid, f in venue.items():
        got = settlements.get(rid, [])
        if len(got) != 1:
            bad.append(f"fill {rid}: {len(got)} settlements")
        elif Decimal(got[0].quantity) != Decimal(f["quantity"]) or Decimal(got[0].price) != Decimal(
            f["price"]
        ):
            bad.append(f"fill {rid}: settled {got[0].quantity} @ {got[0].price}, filled {f}")
    bad += [f"settlement of a fill nobody made: {r}" for r in set(settlements) - set(venue)]
    return bad


def positions_and_cash(
    engine: sa.Engine, tenant: str, book: SampleBook, fills: list[dict[str, Any]]
) -> list[str]:
    """Each account's shares and settled cash equal its start plus its settled fills."""
    bad: list[str] = []
    shares: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    cash: dict[str, Decimal] = {}
    for a in book.accounts:
        cash[a.id] = Decimal(a.cash)
        for lot in a.lots:
            shares[(a.id, lot.instrument)] += Decimal(lot.quantity)
    settled = {
        r.report_id
        for r in _rows(
            engine,
            "SELECT report_id FROM settlements WHERE tenant_id = :t AND status = 'settled'",
            t=tenant,
        )
    }
    for f in {f["report_id"]: f for f in fills}.values():
        if f["report_id"] not in settled:
            continue
        qty, px = Decimal(f["quantity"]), Decimal(f["price"])
        sign = 1 if f["side"] == "buy" else -1
        shares[(f["account_id"], f["instrument"])] += sign * qty
        cash[f["account_id"]] -= sign * qty * px
    held: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for r in _rows(
        engine,
        "SELECT l.account_id, l.instrument, sum(l.quantity) AS q FROM tax_lots l "
        "JOIN accounts a ON a.id = l.account_id WHERE a.tenant_id = :t "
        "GROUP BY l.account_id, l.instrument",
        t=tenant,
    ):
        held[(r.account_id, r.instrument)] = Decimal(r.q)
    for key in set(shares) | set(held):
        if shares.get(key, Decimal(0)) != held.get(key, Decimal(0)):
            bad.append(f"{key}: holds {held.get(key, 0)}, start + settled fills = {shares[key]}")
    for r in _rows(
        engine,
        "SELECT c.account_id, c.settled FROM cash_balances c "
        "JOIN accounts a ON a.id = c.account_id WHERE a.tenant_id = :t",
        t=tenant,
    ):
        if abs(Decimal(r.settled) - cash[r.account_id]) > CASH_TOLERANCE:
            bad.append(f"{r.account_id}: cash {r.settled}, expected {cash[r.account_id]}")
    return bad


def outbox_drained(engine: sa.Engine) -> list[str]:
    """No event is stuck unpublished in the outbox."""
    n = _rows(engine, "SELECT count(*) FROM outbox WHERE published_at IS NULL")[0][0]
    return [f"{n} outbox events never published"] if n else []


def rebalances_finished(engine: sa.Engine, tenant: str) -> list[str]:
    """Every rebalance with an approved recommendation reached a final status."""
    rows = _rows(
        engine,
        "SELECT r.id, r.status FROM rebalances r JOIN recommendations c ON c.rebalance_id = r.id "
        "WHERE r.tenant_id = :t AND c.status = 'approved' "
        "AND r.status NOT IN ('complete', 'partially_complete', 'failed', 'no_trade')",
        t=tenant,
    )
    return [f"rebalance {r.id} still {r.status}" for r in rows]
