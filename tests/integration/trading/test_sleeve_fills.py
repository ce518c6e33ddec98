"""Settled fills keep a stored sleeve attribution current: after a rebalance trades and
settles (partial fills included), the attribution still adds up to the lots and cash, the buy
landed in the sleeve short of it, the sale came out of the sleeve over its target, and the
sleeve views keep saying ``stored``."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tradehelpers import InProcessMarket, make_book, make_recommendation, positions, unique

from rebalancer.adapters.repositories.sleeves import SleeveAttributionRepository
from rebalancer.domain.model import Account, ModelPortfolio, Sleeve, TaxLot
from rebalancer.domain.sleeve_attribution import Attribution
from rebalancer.service_layer.handlers import portfolio, trading
from rebalancer.service_layer.unit_of_work import UnitOfWork
from rebalancer.simulators.venue import SimulatedVenue

pytestmark = pytest.mark.integration

ADMIN = {"X-API-Key": "test-admin-key"}


@pytest.mark.parametrize("partial", [0.0, 1.0])
def test_settled_fills_follow_the_sleeves(client: TestClient, engine: Any, partial: float) -> None:
    book = make_book(engine, n_accounts=0, tenant="tenant-a")
    core_model, sat_model = unique("core"), unique("sat")
    acct = unique("acct")
    core, sat = f"{acct}-core", f"{acct}-sat"
    for model in (
        ModelPortfolio(core_model, 1, {book.a: 0.5, book.b: 0.4}, 0.1),
        ModelPortfolio(sat_model, 1, {book.c: 0.9}, 0.1),
    ):
        with UnitOfWork(engine, book.tenant) as uow:
            portfolio.save_model(uow, model)  # commits
    la, lb = unique("lot"), unique("lot")
    account = Account(
        id=acct,
        tenant_id=book.tenant,
        cash=Decimal("10000"),
        lots=[
            TaxLot(la, book.a, Decimal(100), Decimal(80), date(2022, 1, 3)),
            TaxLot(lb, book.b, Decimal(200), Decimal(55), date(2022, 1, 3)),
        ],
        sleeves=[Sleeve(core, core_model, 0.6), Sleeve(sat, sat_model, 0.4)],
    )
    with UnitOfWork(engine, book.tenant) as uow:
        portfolio.create_account(uow, account)
    book.accounts.append(acct)
    book.lots[acct] = {book.a: la, book.b: lb}
    put = client.put(
        f"/v1/accounts/{acct}/sleeves/holdings",
        json={
            "sleeves": [
                {"id": core, "holdings": {book.a: 100, book.b: 200}, "cash": 5000},
                {"id": sat, "holdings": {}, "cash": 5000},
            ]
        },
        headers=ADMIN,
    )
    assert put.status_code == 200, put.text

    # NAV 30,000: the satellite wants 0.4 * 0.9 * 30,000 / 20 = 540 C, the core 90 A (holds 100)
    rec = make_recommendation(engine, book, acct, [(book.a, "sell", 30), (book.c, "buy", 400)])
    market = InProcessMarket(engine, book, SimulatedVenue(seed=5, partial_fill_probability=partial))
    with UnitOfWork(engine, book.tenant) as uow:
        trading.approve_many(uow, [rec], "t")
    market.pump()

    shares, cash = positions(engine, book.tenant, acct)
    assert shares.get(book.c, 0) > 0 and shares[book.a] < 100  # something traded and settled
    with UnitOfWork(engine, book.tenant) as uow:
        stored = SleeveAttributionRepository(uow.conn, uow.tenant_id).get(acct)
    assert stored is not None
    att = Attribution(stored.holdings, stored.cash)
    assert att.adds_up({k: float(v) for k, v in shares.items()}, float(cash))
    assert stored.holdings[sat] == pytest.approx({book.c: float(shares[book.c])})
    assert stored.holdings[core] == pytest.approx({book.a: float(shares[book.a]), book.b: 200.0})
    assert min(stored.cash.values()) >= 0  # the satellite borrowed from the core's cash
    assert stored.cash[sat] < 5000

    drift = client.get(f"/v1/accounts/{acct}/sleeves/drift", headers=ADMIN)
    assert drift.status_code == 200, drift.text
    assert drift.json()["attribution"] == "stored"
