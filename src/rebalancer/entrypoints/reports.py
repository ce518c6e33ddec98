"""Command-line reports (rendering only; the numbers come from the service layer)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.table import Table

from rebalancer.config import Settings


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _stats_table(title: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title)
    for col in ("key", "orders", "fill rate", "shortfall bps", "est. cost bps", "slippage bps"):
        table.add_column(col, justify="left" if col == "key" else "right")
    table.add_column("shortfall (ccy)", justify="right")
    for r in rows:
        table.add_row(
            r["key"],
            str(r["orders"]),
            _fmt(None if r["fill_rate"] is None else 100 * r["fill_rate"], 1) + " %",
            _fmt(r["shortfall_bps"]),
            _fmt(r["estimated_cost_bps"]),
            _fmt(r["slippage_bps"]),
            r["shortfall_currency"],
        )
    return table


def print_execution_quality(
    settings: Settings, tenant: str, start: str, end: str, *, as_json: bool = False
) -> dict[str, Any]:
    """Print the execution-quality report of ``tenant`` (days ``start..end``, ISO dates)."""
    from rebalancer.adapters.db import make_engine
    from rebalancer.bootstrap import start_infrastructure
    from rebalancer.service_layer.handlers.quality import execution_quality
    from rebalancer.service_layer.unit_of_work import UnitOfWork

    last = date.fromisoformat(end) if end else datetime.now(UTC).date()
    first = date.fromisoformat(start) if start else last - timedelta(days=30)
    s = settings.model_copy(update={"pulsar_url": settings.pulsar_url or "pulsar://unused:1"})
    infra = start_infrastructure(s)
    try:
        engine = make_engine(infra.database_url, s)
        with UnitOfWork(engine, tenant) as uow:
            report = execution_quality(uow, first, last)
        engine.dispose()
    finally:
        infra.stop()
    console = Console()
    if as_json:
        console.print_json(json.dumps(report))
        return report
    comp = report["completion"]["total"]
    rate = comp["completion_rate"]
    console.print(
        f"[bold]Execution quality[/bold] of {tenant}, {report['start']} .. {report['end']}: "
        f"{comp['complete']} complete, {comp['partially_complete']} partially complete, "
        f"{comp['failed']} failed; completed share "
        f"{'-' if rate is None else f'{100 * rate:.1f} %'} "
        f"(target > {100 * report['completion']['target']:.0f} %)"
    )
    console.print(_stats_table("Total", [report["total"]]))
    console.print(_stats_table("By instrument", report["by_instrument"]))
    console.print(_stats_table("By day", report["by_day"]))
    return report
