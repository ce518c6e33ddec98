"""``rebalancer backtest`` end to end on a tiny configuration (one account, two months of the
real S&P 500 data set, two policies): exit 0, every output file written and readable."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from rebalancer.backtest.storage import DB_NAME, query
from rebalancer.entrypoints.cli import app

TABLES = ("daily", "trades", "realized", "decisions", "start_lots", "final_lots", "metrics",
          "accounts")  # fmt: skip


def test_backtest_command_writes_the_report_and_tables(tmp_path: Path) -> None:
    out = tmp_path / "bt"
    res = CliRunner().invoke(
        app,
        [
            "backtest", "--accounts", "1", "--start", "2021-11-01", "--end", "2021-12-31",
            "--policies", "never,monthly", "--bands", "10", "--workers", "1",
            "--output", str(out),
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert f"report: {out / 'report.html'}" in res.output
    # progress: one line per work item without a terminal (one item: no optimizer policy)
    assert "1/1 work items (acct-001 trigger rules done)" in res.output
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count('class="plotly-graph-div"') == 2
    for name in TABLES:
        assert (out / f"{name}.parquet").exists(), name
    metrics = pl.read_parquet(out / "metrics.parquet")
    assert metrics["policy"].to_list() == ["never", "monthly", "band-abs-10"]
    daily = query(out, "select count(distinct date) as days, count(*) as n from daily")
    # 2021-11-01 .. 2021-12-31: 42 trading days in the data set, 3 policies x 1 account
    assert daily["n"][0] == 3 * daily["days"][0] and daily["days"][0] >= 40
    assert (out / DB_NAME).exists()


def test_backtest_command_rejects_a_bad_policy_naming_the_forms(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["backtest", "--policies", "sometimes", "--output", str(tmp_path)]
    )
    assert res.exit_code == 2
    assert "unknown policy" in res.output and "band-abs-<pct>" in res.output
