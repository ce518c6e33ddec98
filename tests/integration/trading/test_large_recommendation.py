"""A recommendation with more orders than one page of the order list (500): once its sale
settles, every held buy is released, and the approval answers with every order (real
PostgreSQL, the in-process venue and custodian; the buys themselves are not traded)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from tradehelpers import InProcessMarket, make_book, make_recommendation, rows

from rebalancer.adapters import orm
from rebalancer.contracts import EventType, OrderPlacedV1, parse_payload_as
from rebalancer.domain.model import Instrument
from rebalancer.service_layer.handlers import trading
from rebalancer.service_layer.unit_of_work import UnitOfWork
from rebalancer.simulators.venue import SimulatedVenue

pytestmark = pytest.mark.integration

_BUYS = 510
"""More buys than the order list's page of 500."""


def test_every_held_buy_of_a_large_recommendation_is_released(engine: Any) -> None:
    book = make_book(engine, n_accounts=1, cash="0")  # no cash: the buys wait for the sale
    acct = book.accounts[0]
    extra = [f"X{uuid.uuid4().hex[:6].upper()}{k:03d}" for k in range(_BUYS)]
    with UnitOfWork(engine, book.tenant) as uow:
        for i in extra:
            uow.instruments.upsert(Instrument(i, "equity", "tech", 1, settlement_days=1))
        uow.market.add_bars(
            datetime(2024, 1, 2, 21, tzinfo=UTC),
            [
                {"instrument": i, "close": Decimal(1), "adv_shares": 1e6, "daily_volatility": 0.01}
                for i in extra
            ],
        )
        uow.commit()
    book.prices.update({i: Decimal(1) for i in extra})
    rec = make_recommendation(
        engine, book, acct, [(book.a, "sell", 100)] + [(i, "buy", 1) for i in extra]
    )
    market = InProcessMarket(engine, book, SimulatedVenue(seed=3))
    with UnitOfWork(engine, book.tenant) as uow:
        shown = trading.approve(uow, rec, "t")
    assert len(shown) == _BUYS + 1  # the approval lists every order, not a page of them
    held = [o for o in rows(engine, orm.orders, recommendation_id=rec) if o.wave == 1]
    assert len(held) == _BUYS and all(o.status == "new" for o in held)

    (sale,) = [
        parse_payload_as(e, OrderPlacedV1)
        for e in market._events()
        if e.type == EventType.ORDER_PLACED
    ]
    # the sale fills and settles; its settlement releases the buys
    market.apply(market.venue.handle_order(sale, book.prices[sale.instrument]))
    orders = rows(engine, orm.orders, recommendation_id=rec)
    assert len(orders) == _BUYS + 1
    assert [o.instrument for o in orders if o.status == "new"] == []
    sent = [e for e in market._events() if e.type == EventType.ORDER_PLACED]
    assert len(sent) == _BUYS
