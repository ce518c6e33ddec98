"""The backtest and the live service build the same request, hence the same decision, for the
same state: market data and an account stored in the real PostgreSQL against the backtest's
in-memory replay of the same history."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from rebalancer.backtest.engine import AccountReplay
from rebalancer.backtest.market import MarketHistory
from rebalancer.backtest.policies import parse_policy
from rebalancer.domain.model import Account, Instrument, ModelPortfolio, Sleeve, TaxLot, TaxType
from rebalancer.optimizer import Recommender
from rebalancer.service_layer.handlers import portfolio
from rebalancer.service_layer.handlers.recommending import build_request, default_policy
from rebalancer.service_layer.unit_of_work import UnitOfWork

pytestmark = pytest.mark.integration
DAYS = 45


def _history(ids: list[str]) -> MarketHistory:
    rng = np.random.default_rng(5)
    dates, d = [], date(2024, 3, 1)
    while len(dates) < DAYS:
        if d.weekday() < 5:
            dates.append(d)
        d += timedelta(days=1)
    rets = rng.normal(0.0, 0.015, (DAYS, len(ids)))
    close = np.round(100.0 * np.exp(np.cumsum(rets, axis=0)), 2)
    adv = np.round(rng.uniform(1e5, 1e6, (DAYS, len(ids))))
    vol = np.round(rng.uniform(0.01, 0.02, (DAYS, len(ids))), 6)
    spread = np.round(rng.uniform(1.0, 8.0, (DAYS, len(ids))), 2)
    return MarketHistory(tuple(dates), tuple(ids), close, adv, vol, spread)


def _store(engine: Any, tenant: str, h: MarketHistory) -> None:
    with UnitOfWork(engine, tenant) as uow:
        for t, day in enumerate(h.dates):
            uow.market.add_bars(
                datetime.combine(day, time(21), tzinfo=UTC),
                [
                    {
                        "instrument": i,
                        "close": Decimal(f"{h.close[t, k]:.2f}"),
                        "adv_shares": float(h.adv_shares[t, k]),
                        "daily_volatility": float(h.daily_volatility[t, k]),
                        "half_spread_bps": float(h.half_spread_bps[t, k]),
                    }
                    for k, i in enumerate(h.ids)
                ],
            )
        uow.commit()


def seed_account(
    engine: Any, tenant: str
) -> tuple[Account, ModelPortfolio, dict[str, Instrument], MarketHistory]:
    """Instruments, a model, a taxable account and 45 days of prices stored for ``tenant``."""
    sfx = uuid.uuid4().hex[:6].upper()
    a, b, c = f"BA{sfx}", f"BB{sfx}", f"BC{sfx}"
    instruments = {
        a: Instrument(a, "equity", "tech", substitutes=(b,)),
        b: Instrument(b, "equity", "tech", substitutes=(a,)),
        c: Instrument(c, "fixed_income", "bonds"),
    }
    model = ModelPortfolio(f"m-{sfx}", 1, {a: 0.3, b: 0.3, c: 0.35}, 0.05)
    account = Account(
        f"acct-{sfx}", tenant, Decimal("2500.00"),
        [
            TaxLot(f"l1-{sfx}", a, Decimal(120), Decimal("80.00"), date(2022, 5, 2)),
            TaxLot(f"l2-{sfx}", a, Decimal(30), Decimal("130.00"), date(2024, 1, 10)),
            TaxLot(f"l3-{sfx}", c, Decimal(60), Decimal("101.00"), date(2023, 7, 3)),
        ],
        [Sleeve(f"s-{sfx}", model.id, 1.0)], None, TaxType.TAXABLE,
    )  # fmt: skip
    h = _history([a, b, c])
    for inst in instruments.values():
        with UnitOfWork(engine, tenant) as uow:
            portfolio.upsert_instrument(uow, inst)
    with UnitOfWork(engine, tenant) as uow:
        portfolio.save_model(uow, model)
    with UnitOfWork(engine, tenant) as uow:
        portfolio.create_account(uow, account)
    _store(engine, tenant, h)
    return account, model, instruments, h


def test_backtest_and_service_build_the_same_request_and_decision(runtime: Any) -> None:
    engine = runtime.engine
    tenant = f"bt-{uuid.uuid4().hex[:8]}"
    account, model, instruments, h = seed_account(engine, tenant)

    t = len(h.dates) - 1
    as_of = h.dates[t]
    with UnitOfWork(engine, tenant) as uow:
        stored = uow.accounts.get(account.id)
        live = build_request(uow, stored, as_of)
    replay = AccountReplay(
        stored, {model.id: model}, instruments, h, parse_policy("optimizer"), Recommender(),
        {}, frozenset(),
    )  # fmt: skip
    backtest, _ = replay.ask(t, default_policy())
    assert backtest == live

    # the in-memory account (lots possibly in another order) reaches the same decision
    mine = AccountReplay(
        account, {model.id: model}, instruments, h, parse_policy("optimizer"), Recommender(),
        {}, frozenset(),
    )  # fmt: skip
    _, from_backtest = mine.ask(t, default_policy())
    from_service = Recommender().analyze(live)
    assert from_backtest.decision == from_service.decision

    def trades(r: Any) -> list[tuple[str, str, float]]:
        return sorted((x.instrument, str(x.side), x.quantity) for x in r.trades)

    assert trades(from_backtest) == trades(from_service)
    assert from_backtest.net_benefit == pytest.approx(from_service.net_benefit, rel=1e-6, abs=1e-6)


def test_success_metrics_route_reads_stored_drift_decisions_and_orders(
    runtime: Any, settings: Any
) -> None:
    import sqlalchemy as sa
    from fastapi.testclient import TestClient

    from rebalancer.adapters import orm
    from rebalancer.analytics import performance as perf
    from rebalancer.config import ApiKeySpec, Scope
    from rebalancer.entrypoints.api import create_app
    from rebalancer.optimizer.schemas import AnalyzeRequest, AnalyzeResponse
    from rebalancer.service_layer.handlers.recommending import recommend, request_rebalance

    engine = runtime.engine
    tenant = f"bt-{uuid.uuid4().hex[:8]}"
    account, _, instruments, _ = seed_account(engine, tenant)
    now = datetime.now(UTC)
    with UnitOfWork(engine, tenant) as uow:
        # max instrument drift over four days: 4 %, 1.5 %, 2.5 %, then 1 % now (the newest)
        for days_ago, max_abs in ((3, 0.04), (2, 0.015), (1, 0.025)):
            uow.rebalancing.add_drift_snapshot(
                account.id, now - timedelta(days=days_ago), Decimal(30000), 0.05, max_abs, None, {}
            )
        uow.rebalancing.add_drift_snapshot(account.id, now, Decimal(30000), 0.03, 0.01, None, {})
        uow.commit()
    with UnitOfWork(engine, tenant) as uow:
        rid, _ = request_rebalance(uow, account.id, ["test"], 1)
    with UnitOfWork(engine, tenant) as uow:
        rec_id = recommend(uow, runtime.optimizer, rid)
    assert rec_id is not None
    with engine.begin() as conn:  # two filled orders and one rejected: 2/3 < 95 %
        conn.execute(
            sa.insert(orm.orders),
            [
                {
                    "id": uuid.uuid4(), "recommendation_id": rec_id, "tenant_id": tenant,
                    "account_id": account.id, "instrument": inst, "side": "buy",
                    "quantity": Decimal(1), "status": "filled" if k < 2 else "rejected",
                }
                for k, inst in enumerate(sorted(instruments))
            ],
        )  # fmt: skip
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(orm.recommendations).where(orm.recommendations.c.id == rec_id)
        ).one()
    expected = perf.grade(
        AnalyzeRequest.model_validate(row.request),
        AnalyzeResponse.model_validate(row.response),
        runtime.optimizer,
    )
    key = ApiKeySpec(key=f"k-{tenant}", tenant=tenant, scopes=[Scope.READ])
    app = create_app(runtime, settings=settings.model_copy(update={"api_keys": [key]}))
    with TestClient(app, raise_server_exceptions=False) as client:
        resp = client.get("/v1/metrics/success", headers={"X-API-Key": f"k-{tenant}"})
        bad = client.get("/v1/metrics/success?sample=999", headers={"X-API-Key": f"k-{tenant}"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["average_drift"] == {"value": 0.015, "target": 0.02, "met": True, "sample": 1}
    ex = body["successful_executions"]
    assert (ex["value"], ex["met"], ex["sample"]) == (pytest.approx(2 / 3), False, 3)
    opt = body["optimal_decisions"]
    assert opt["sample"] == 1 and opt["value"] == (1.0 if expected else 0.0)
    assert body["frequency"]["rebalances"] in (0, 1)
    # frequency analysis: a 2 % band is entered twice (4 % first, 2.5 % after 1.5 %), 1 % once
    sweep = {row["width"]: row for row in body["band_sweep"]}
    assert sweep[0.02]["entries"] == 2 and sweep[0.02]["snapshots_beyond"] == 0.5
    assert sweep[0.02]["entries_per_account_per_30_days"] == pytest.approx(2.0)
    assert (sweep[0.01]["entries"], sweep[0.01]["snapshots_beyond"]) == (1, 1.0)
    assert (sweep[0.03]["entries"], sweep[0.05]["entries"], sweep[0.1]["entries"]) == (1, 0, 0)
    # cost analysis of the stored recommendation (no fills yet: nothing realized)
    cost = body["cost"]
    resp_json = AnalyzeResponse.model_validate(row.response)
    assert cost["rebalances"] == body["frequency"]["rebalances"]
    if cost["rebalances"]:
        assert cost["traded_value"] == pytest.approx(sum(t.value for t in resp_json.trades))
    assert cost["filled_value"] == 0.0 and cost["realized_cost_bps"] is None
    assert bad.status_code == 422


def test_a_recent_loss_sale_blocks_the_same_buys_in_the_service_and_the_backtest(
    runtime: Any,
) -> None:
    """A sale at a loss 10 days ago, stored as a settlement with its realized loss, reaches the
    service's request as a wash-sale block; the backtest's own loss-sale log gives the same
    request, hence the same decision, and neither buys the blocked instrument back."""
    import sqlalchemy as sa

    from rebalancer.adapters import orm
    from rebalancer.analytics.requests import LossSale

    engine = runtime.engine
    tenant = f"bt-{uuid.uuid4().hex[:8]}"
    account, model, instruments, h = seed_account(engine, tenant)
    t = len(h.dates) - 1
    as_of, sold_on = h.dates[t], h.dates[t - 8]
    blocked = sorted(i for i in instruments if i.startswith("BB"))[0]
    sid = f"s-{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(
            sa.insert(orm.settlements).values(
                id=sid, report_id=sid, order_id=uuid.uuid4(), tenant_id=tenant,
                account_id=account.id, instrument=blocked, side="sell", quantity=Decimal(10),
                price=Decimal("90.00"), trade_date=sold_on, settle_date=sold_on,
                status="settled",
            )
        )  # fmt: skip
        conn.execute(
            sa.insert(orm.realized_gains).values(
                settlement_id=sid, account_id=account.id, lot_id=f"old-{sid}",
                instrument=blocked, quantity=Decimal(10), proceeds=Decimal(900),
                cost=Decimal(1000), gain=Decimal(-100), term="short", settle_date=sold_on,
                trade_date=sold_on,
            )
        )  # fmt: skip
    with UnitOfWork(engine, tenant) as uow:
        stored = uow.accounts.get(account.id)
        live = build_request(uow, stored, as_of)
    assert blocked in live.policy.no_buy

    replay = AccountReplay(
        stored, {model.id: model}, instruments, h, parse_policy("optimizer"), Recommender(),
        {}, frozenset(),
    )  # fmt: skip
    _, unblocked = replay.ask(t, default_policy())
    # without the loss sale the optimizer buys it (underweight by its whole 30 % target)
    assert [x for x in unblocked.trades if x.instrument == blocked and str(x.side) == "buy"]
    replay.loss_sales.append(LossSale(blocked, sold_on))
    backtest, from_backtest = replay.ask(t, default_policy())
    assert backtest == live
    from_service = Recommender().analyze(live)
    assert from_backtest.decision == from_service.decision
    assert sorted((x.instrument, str(x.side), x.quantity) for x in from_backtest.trades) == sorted(
        (x.instrument, str(x.side), x.quantity) for x in from_service.trades
    )
    assert not [x for x in from_service.trades if x.instrument == blocked and str(x.side) == "buy"]
