"""Backtest results on disk (Parquet + DuckDB round trip) and the HTML report's plotly charts,
on a hand-checkable two-asset replay (A doubles on day 2, B flat)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from bt_synthetic import jump_history, two_asset_world

from rebalancer.backtest import BacktestConfig, save_results
from rebalancer.backtest.engine import replay_account
from rebalancer.backtest.metrics import per_account, policy_metrics
from rebalancer.backtest.policies import parse_policy
from rebalancer.backtest.report import drift_figure, frontier_figure, render
from rebalancer.backtest.runner import BacktestResult, _frames
from rebalancer.backtest.storage import DB_NAME, load, query
from rebalancer.optimizer import Recommender

POLICIES = ("never", "band-abs-5", "band-abs-20")


@pytest.fixture(scope="module")
def result() -> BacktestResult:
    h = jump_history()
    account, models, instruments = two_asset_world()
    rec = Recommender()
    runs = [
        replay_account(
            account, models, instruments, h, parse_policy(p), rec,
            t_start=0, t_end=len(h.dates) - 1,
        )
        for p in POLICIES
    ]  # fmt: skip
    frames = _frames(runs)
    cfg = BacktestConfig(start=h.dates[0], end=h.dates[-1], accounts=1, workers=1)
    return BacktestResult(cfg, frames, policy_metrics(frames), ["A", "B"], [])


def test_tables_round_trip_through_parquet_and_duckdb(
    result: BacktestResult, tmp_path: Path
) -> None:
    report = save_results(result, tmp_path)
    assert report == tmp_path / "report.html" and report.stat().st_size > 0
    assert (tmp_path / DB_NAME).exists()
    tables = {**result.frames, "metrics": result.metrics, "accounts": per_account(result.frames)}
    for name, frame in tables.items():
        back = load(tmp_path, name)
        keys = [c for c in ("policy", "account", "date", "fill_id", "lot_id") if c in frame]
        assert back.sort(keys).equals(frame.sort(keys)), name
    # DuckDB holds the same rows: the mean drift per policy from SQL equals Polars'
    sql = query(tmp_path, "select policy, avg(drift) as drift from daily group by 1 order by 1")
    mine = result.frames["daily"].group_by("policy").agg(pl.col("drift").mean()).sort("policy")
    assert sql["policy"].to_list() == mine["policy"].to_list()
    assert sql["drift"].to_list() == pytest.approx(mine["drift"].to_list())
    n = query(tmp_path, "select count(*) as n from trades")["n"][0]
    assert n == len(result.frames["trades"]) > 0
    # a second save replaces the database instead of failing on existing tables
    save_results(result, tmp_path)
    assert query(tmp_path, "select count(*) as n from metrics")["n"][0] == len(POLICIES)


def test_drift_over_time_chart_has_one_line_per_policy_with_the_hand_values(
    result: BacktestResult,
) -> None:
    fig = drift_figure(result.frames["daily"])
    lines = {t.name: list(t.y) for t in fig.data}
    assert set(lines) == set(POLICIES)
    # never: on target, then A = 2/3 against 1/2 -> drift 1/6 of NAV (in %)
    assert lines["never"] == pytest.approx([0, 0, 100 / 6, 100 / 6, 100 / 6, 100 / 6])
    # a 20 % band never fires (max instrument drift 1/6); a 5 % band trades back on day 2
    assert lines["band-abs-20"] == pytest.approx(lines["never"])
    assert max(lines["band-abs-5"]) < 0.5


def test_cost_vs_drift_frontier_joins_the_absolute_bands_by_width(result: BacktestResult) -> None:
    fig = frontier_figure(result.metrics)
    bands, others = fig.data
    assert list(bands.text) == ["5 % band", "20 % band"]
    m = {r["policy"]: r for r in result.metrics.iter_rows(named=True)}
    assert list(bands.x) == pytest.approx([m[p]["avg_drift"] * 100 for p in POLICIES[1:]])
    assert list(bands.y) == pytest.approx([m[p]["cost_bps"] for p in POLICIES[1:]])
    assert bands.y[0] > 0 and bands.y[1] == 0  # the 5 % band paid spread, the 20 % one nothing
    assert list(others.text) == ["never"]


def test_report_holds_both_plotly_charts_and_the_metrics_table(result: BacktestResult) -> None:
    page = render(result)
    assert page.count('class="plotly-graph-div"') == 2
    assert "cdn.plot.ly" in page  # plotly.js loaded once, from its CDN
    assert "Drift over time" in page and "Cost vs drift frontier" in page
    assert page.count("<tr>") == 1 + len(POLICIES)  # header + one row per policy
    for label in ("wash-sale violations", "decisions within 0.5 %", "permanent saving"):
        assert label in page
