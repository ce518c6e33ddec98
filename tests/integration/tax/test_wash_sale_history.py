"""The stored path respects the wash-sale window after a loss sale: buying the group back within
the window is forbidden in the optimizer request (and allowed again after it)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from rebalancer.adapters import orm
from rebalancer.domain.model import Account, Instrument, ModelPortfolio, Sleeve, TaxLot
from rebalancer.service_layer.handlers import portfolio
from rebalancer.service_layer.handlers.recommending import build_request
from rebalancer.service_layer.unit_of_work import UnitOfWork

pytestmark = pytest.mark.integration
TENANT = "tenant-a"


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _setup(engine: sa.Engine, sold_on: date) -> tuple[str, str, str]:
    loser, other = _id("LOSS").upper(), _id("OTHR").upper()
    model, account = _id("m"), _id("acct")
    with UnitOfWork(engine, TENANT) as uow:
        uow.tenants.ensure(TENANT)
        portfolio.upsert_instrument(uow, Instrument(loser, wash_sale_group=f"grp-{loser}"))
    with UnitOfWork(engine, TENANT) as uow:
        portfolio.upsert_instrument(uow, Instrument(other))
    with UnitOfWork(engine, TENANT) as uow:
        portfolio.save_model(uow, ModelPortfolio(model, 0, {loser: 0.5, other: 0.45}, 0.05))
    with UnitOfWork(engine, TENANT) as uow:
        portfolio.create_account(
            uow,
            Account(
                account,
                TENANT,
                Decimal("5000"),
                [TaxLot(_id("lot"), other, Decimal(10), Decimal(100), date(2020, 1, 2))],
                [Sleeve(_id("s"), model, 1.0)],
            ),
        )
    with UnitOfWork(engine, TENANT) as uow:
        ts = datetime.combine(sold_on + timedelta(days=5), time(21), tzinfo=UTC)
        uow.market.add_bars(
            ts,
            [
                {"instrument": loser, "close": Decimal(50)},
                {"instrument": other, "close": Decimal(100)},
            ],
        )
        stl = _id("stl")
        uow.conn.execute(
            sa.insert(orm.settlements).values(
                id=stl,
                report_id=_id("rep"),
                order_id=uuid.uuid4(),
                tenant_id=TENANT,
                account_id=account,
                instrument=loser,
                side="sell",
                quantity=Decimal(10),
                price=Decimal(50),
                trade_date=sold_on,
                settle_date=sold_on + timedelta(days=1),
                status="settled",
            )
        )
        uow.conn.execute(
            sa.insert(orm.realized_gains).values(
                settlement_id=stl,
                account_id=account,
                lot_id=_id("lot"),
                instrument=loser,
                quantity=Decimal(10),
                proceeds=Decimal(500),
                cost=Decimal(800),
                gain=Decimal(-300),
                term="short",
                settle_date=sold_on + timedelta(days=1),
                trade_date=sold_on,
            )
        )
        uow.commit()
    return account, loser, other


def _request(engine: sa.Engine, account: str, as_of: date) -> Any:
    with UnitOfWork(engine, TENANT) as uow:
        return build_request(uow, uow.accounts.get(account), as_of)


def test_loss_sale_in_window_blocks_buying_the_group_back(engine: sa.Engine) -> None:
    sold_on = date(2024, 3, 1)
    account, loser, other = _setup(engine, sold_on)
    inside = _request(engine, account, sold_on + timedelta(days=10))
    assert loser in inside.policy.no_buy and other not in inside.policy.no_buy
    after = _request(engine, account, sold_on + timedelta(days=31))
    assert loser not in after.policy.no_buy


def test_a_batch_rebalance_blocks_buying_back_a_group_sold_at_a_loss(engine: sa.Engine) -> None:
    """The batch path (one chunk of a model's accounts) reads the loss sales of all its
    accounts at once and forbids buying their groups back, as the single-account path does."""
    from rebalancer.adapters.repositories.batch_results import stored_request
    from rebalancer.contracts import RebalanceTriggeredV1, decode
    from rebalancer.optimizer import Recommender
    from rebalancer.service_layer.handlers.batch import BATCH_TOPIC, recommend_chunk, start_batch

    with UnitOfWork(engine, TENANT) as uow:
        market_date = uow.market.as_of() or date.today()
    sold_on = market_date - timedelta(days=10)  # its bar (5 days later) leaves as_of unchanged
    account, loser, other = _setup(engine, sold_on)
    with UnitOfWork(engine, TENANT) as uow:
        (sleeve,) = uow.accounts.get(account).sleeves
        batch = start_batch(uow, sleeve.model_id, actor="test")
        uow.commit()
    o, r, rb = orm.outbox, orm.recommendations, orm.rebalances
    with engine.connect() as conn:
        bodies = conn.execute(
            sa.select(o.c.body).where(
                o.c.topic == BATCH_TOPIC, o.c.body.contains(f"batch:{batch.batch_id}".encode())
            )
        ).scalars()
        envs = [decode(bytes(b)) for b in bodies]
    items = [(e.event_id, RebalanceTriggeredV1.model_validate(e.payload)) for e in envs]
    assert len(items) == 1
    with UnitOfWork(engine, TENANT) as uow:
        res = recommend_chunk(uow, Recommender(), items)
    assert not res.failed and len(res.computed) == 1
    with engine.connect() as conn:
        rec_id = conn.execute(
            sa.select(r.c.id)
            .join(rb, rb.c.id == r.c.rebalance_id)
            .where(rb.c.batch_id == batch.batch_id)
        ).scalar_one()
        request = stored_request(conn, rec_id)
    assert loser in request["policy"]["no_buy"] and other not in request["policy"]["no_buy"]
