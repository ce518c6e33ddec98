"""The whole loop through HTTP and Pulsar on the real embedded servers: sample book -> prices ->
drift -> triggers -> recommendations -> approval over HTTP -> simulated venue -> settlement.

Asserts on the settled result: lots and cash moved by exactly the settled fills, drift reduced,
every order filled or ended with a reason, every fill settled.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

import pytest
from rich.console import Console
from rich.progress import Progress

from rebalancer.bootstrap import bootstrap
from rebalancer.config import ApiKeySpec, Scope, Settings
from rebalancer.entrypoints.demo import Demo

pytestmark = pytest.mark.e2e

E2E_KEY = "e2e-key"
E2E_TENANT = "e2e"


def test_whole_loop_through_http_and_pulsar(settings: Settings) -> None:
    s = settings.model_copy(
        update={
            "api_keys": [ApiKeySpec(key=E2E_KEY, tenant=E2E_TENANT, scopes=list(Scope), name="e2e")]
        }
    )
    rt = bootstrap(s)
    demo = Demo(
        rt, E2E_KEY, days=1, seed=11, accounts=12, console=Console(quiet=True), tenant=E2E_TENANT
    )
    initial = {a.id: a for a in demo.book.accounts}
    try:
        demo.start()
        with Progress(disable=True) as progress:
            result = demo.run_cycle(progress)
        final = {a: demo.call("GET", f"/v1/accounts/{a}") for a in initial}
        orders: list[dict[str, Any]] = []
        for a in initial:
            orders += demo.call("GET", "/v1/orders", params={"account_id": a})
        recs = demo.stats.recommendations(result.approved)
        settlements = demo.stats.settlements(
            [o.id for o in demo.stats.orders([r.id for r in recs])]
        )
    finally:
        demo.stop()
        rt.close()

    # Something happened, and it happened to every drifted account.
    assert len(result.approved) >= len(initial) // 2
    assert orders and result.fills > 0

    # Every order ended explicitly: filled, or rejected/expired/cancelled with a reason.
    for o in orders:
        assert o["status"] in ("filled", "rejected", "expired", "cancelled"), o
        if o["status"] != "filled":
            assert o["reason"], o
        assert Decimal(o["filled_quantity"]) <= Decimal(o["quantity"])

    # Every fill settled (the simulated agent never fails here).
    assert result.unsettled_fills == 0 and result.failed_settlements == 0
    assert len(settlements) == result.fills

    # Positions and cash after settlement == initial + settled fills, account by account.
    moved: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    cash_moved: dict[str, Decimal] = defaultdict(Decimal)
    for st in settlements:
        sign = 1 if st.side == "buy" else -1
        moved[(st.account_id, st.instrument)] += sign * Decimal(st.quantity)
        cash_moved[st.account_id] -= sign * Decimal(st.quantity) * Decimal(st.price)
    for acct_id, before in initial.items():
        after = final[acct_id]
        held_after: dict[str, Decimal] = defaultdict(Decimal)
        for lot in after["lots"]:
            held_after[lot["instrument"]] += Decimal(str(lot["quantity"]))
        held_before = before.quantities()
        for inst in set(held_before) | set(held_after):
            expected = held_before.get(inst, Decimal(0)) + moved[(acct_id, inst)]
            assert held_after.get(inst, Decimal(0)) == expected, (acct_id, inst)
        expected_cash = before.cash + cash_moved[acct_id]
        assert abs(Decimal(str(after["cash"])) - expected_cash) < Decimal("0.01"), acct_id

    # Drift went down for the accounts that were rebalanced.
    rebalanced = list(result.drift_before)
    mean_before = sum(result.drift_before[a] for a in rebalanced) / len(rebalanced)
    mean_after = sum(result.drift_after[a] for a in rebalanced) / len(rebalanced)
    assert mean_after < mean_before
