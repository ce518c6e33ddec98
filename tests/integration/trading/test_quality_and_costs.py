"""Execution quality checked against a hand calculation; realized costs fed back into the
optimizer request; the CLI report."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from tradehelpers import make_book, make_recommendation
from typer.testing import CliRunner

from rebalancer.contracts import ExecutionReportV1, ReportKind
from rebalancer.service_layer.handlers import recommending, settling, trading
from rebalancer.service_layer.handlers.quality import execution_quality
from rebalancer.service_layer.unit_of_work import UnitOfWork
from rebalancer.simulators.settlement import SettlementAgent

pytestmark = pytest.mark.integration
TODAY = datetime.now(UTC).date()


def _report(
    order: dict[str, Any],
    seq: int,
    kind: ReportKind,
    qty: str = "0",
    price: str | None = None,
    cum: str = "0",
) -> ExecutionReportV1:
    return ExecutionReportV1(
        report_id=f"{order['id']}:{seq}",
        order_id=order["id"],
        account_id=order["account_id"],
        instrument=order["instrument"],
        side=order["side"],
        kind=kind,
        fill_quantity=Decimal(qty),
        fill_price=Decimal(price) if price else None,
        cumulative_quantity=Decimal(cum),
        sequence=seq,
        reason="day order expired" if kind == ReportKind.EXPIRED else None,
        venue_time=datetime.now(UTC),
    )


def _feed(engine: Any, tenant: str, reports: list[ExecutionReportV1]) -> None:
    agent = SettlementAgent()
    for r in reports:
        with UnitOfWork(engine, tenant) as uow:
            trading.apply_execution_report(uow, r)
        if r.kind.is_fill:
            with UnitOfWork(engine, tenant) as uow:
                settling.apply_settlement_confirmation(uow, agent.settle(r, r.venue_time.date(), 1))


def _approve(
    engine: Any, book: Any, acct: str, trades: list[Any], cost: float
) -> list[dict[str, Any]]:
    rec = make_recommendation(engine, book, acct, trades, cost_bps=cost)
    with UnitOfWork(engine, book.tenant) as uow:
        return trading.approve(uow, rec, "t")


def test_execution_quality_matches_a_hand_calculation(
    engine: Any, settings: Any, tmp_path: Path
) -> None:
    book = make_book(engine, n_accounts=2, cash="100000")
    acct1, acct2 = book.accounts
    o1 = {o["instrument"]: o for o in _approve(engine, book, acct1, [(book.c, "buy", 100)], 5.0)}
    o1 |= {o["instrument"]: o for o in _approve(engine, book, acct1, [(book.a, "sell", 10)], 8.0)}
    (o2,) = _approve(engine, book, acct2, [(book.c, "buy", 50)], 5.0)
    _feed(
        engine,
        book.tenant,
        [
            _report(o1[book.c], 1, ReportKind.ACK),
            _report(o1[book.c], 2, ReportKind.FILL, "100", "20.02", "100"),  # 10 bps worse
            _report(o1[book.a], 1, ReportKind.PARTIAL_FILL, "6", "99.90", "6"),  # 10 bps
            _report(o1[book.a], 2, ReportKind.EXPIRED, cum="6"),
            _report(o2, 1, ReportKind.FILL, "50", "20.01", "50"),  # 5 bps
        ],
    )
    with UnitOfWork(engine, book.tenant) as uow:
        rep = execution_quality(uow, TODAY, TODAY)
    total = rep["total"]
    # w = filled * arrival: 2000, 600, 1000 (currency)
    assert total["orders"] == 3 and total["filled_orders"] == 3
    assert total["shortfall_bps"] == pytest.approx((10 * 2000 + 10 * 600 + 5 * 1000) / 3600)
    assert total["estimated_cost_bps"] == pytest.approx((5 * 2000 + 8 * 600 + 5 * 1000) / 3600)
    assert total["slippage_bps"] == pytest.approx((5 * 2000 + 2 * 600 + 0 * 1000) / 3600)
    assert total["fill_rate"] == pytest.approx(156 / 160)
    assert Decimal(total["shortfall_currency"]) == Decimal("3.1")  # 2.00 + 0.60 + 0.50
    by_inst = {r["key"]: r for r in rep["by_instrument"]}
    assert by_inst[book.c]["shortfall_bps"] == pytest.approx(25000 / 3000)
    assert by_inst[book.c]["fill_rate"] == 1.0
    assert by_inst[book.a]["shortfall_bps"] == pytest.approx(10.0)
    assert by_inst[book.a]["fill_rate"] == pytest.approx(0.6)
    assert by_inst[book.a]["slippage_bps"] == pytest.approx(2.0)
    assert [d["key"] for d in rep["by_day"]] == [TODAY.isoformat()]
    comp = rep["completion"]["total"]
    # three rebalances: acct1's C buy (complete), acct1's A sell (partial), acct2's (complete)
    assert (comp["complete"], comp["partially_complete"], comp["failed"]) == (2, 1, 0)
    assert comp["completion_rate"] == pytest.approx(2 / 3) and comp["meets_target"] is False

    # realized costs: C observed 10 then 5 bps -> 10, then 0.8 * 10 + 0.2 * 5 = 9 (2 orders)
    est = {e["instrument"]: e for e in rep["cost_estimates"]}
    assert est[book.c]["half_spread_bps"] == pytest.approx(9.0)
    assert est[book.c]["observations"] == 2 and est[book.c]["in_use"] is False
    assert est[book.a]["half_spread_bps"] == pytest.approx(10.0)

    # the CLI prints the same report
    env = {
        "REBALANCER_DATABASE_URL": settings.database_url,
        "REBALANCER_PULSAR_URL": settings.pulsar_url,
        "REBALANCER_DATA_DIR": str(tmp_path),
    }
    from rebalancer.entrypoints.cli import app

    out = CliRunner().invoke(
        app,
        ["execution-quality", "--tenant", book.tenant, "--start", str(TODAY), "--json"],
        env=env,
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["total"]["fill_rate"] == pytest.approx(156 / 160)
    table = CliRunner().invoke(app, ["execution-quality", "--tenant", book.tenant], env=env)
    assert table.exit_code == 0 and "completed share 66.7 %" in table.stdout

    # a third C order (20 bps) makes the estimate ripe: 0.8 * 9 + 0.2 * 20 = 11.2 bps
    (o3,) = _approve(engine, book, acct2, [(book.c, "buy", 10)], 5.0)
    _feed(engine, book.tenant, [_report(o3, 1, ReportKind.FILL, "10", "20.04", "10")])
    with UnitOfWork(engine, book.tenant) as uow:
        account = uow.accounts.get(acct1)
        request = recommending.build_request(uow, account, TODAY)
    spreads = {i.id: i.half_spread_bps for i in request.instruments}
    assert spreads[book.c] == pytest.approx(11.2)
    assert spreads[book.a] == recommending.DEFAULT_HALF_SPREAD_BPS  # 1 observation: quoted


def test_execution_quality_refuses_a_reversed_window(engine: Any) -> None:
    from rebalancer.domain.errors import InvalidInput

    with UnitOfWork(engine, f"t-{uuid.uuid4().hex[:6]}") as uow, pytest.raises(InvalidInput):
        execution_quality(uow, TODAY, TODAY.replace(year=TODAY.year - 1))
