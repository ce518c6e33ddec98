"""On real history (the 2020 crash, a taxable account with monthly deposits), the optimizer
harvests losses and the independent check of the logs finds no wash sale."""

from __future__ import annotations

from datetime import date

import polars as pl

from rebalancer.backtest import BacktestConfig, run_backtest
from rebalancer.backtest.tax import LossDefinition, wash_sale_violations


def test_optimizer_policies_wash_no_loss_through_the_2020_crash() -> None:
    cfg = BacktestConfig(
        start=date(2020, 2, 3), end=date(2020, 5, 29), accounts=1,
        policies=("optimizer",), frontier_bands=(), workers=1,
    )  # fmt: skip
    res = run_backtest(cfg)
    realized = res.frames["realized"]
    harvested = realized.filter(
        (pl.col("policy") == "optimizer") & pl.col("taxable") & pl.col("wash_sale_loss")
    )
    assert len(harvested) > 0, "the crash gives the optimizer losses to harvest"
    buys = res.frames["trades"].filter(
        (pl.col("policy") == "optimizer") & (pl.col("side") == "buy")
    )
    assert len(buys) > 0, "it also buys (deposits, rebalancing), so washing was possible"
    assert wash_sale_violations(res.frames["trades"], realized).is_empty()
    m = {r["policy"]: r for r in res.metrics.iter_rows(named=True)}
    assert m["optimizer"]["wash_sale_violations"] == 0
    assert m["optimizer"]["failed_decisions"] == 0
    # the stricter count (impact included) is reported alongside, from the same logs
    strict = wash_sale_violations(
        res.frames["trades"], realized, loss=LossDefinition.AFTER_ALL_COSTS
    )
    assert (
        m["optimizer"]["wash_sale_violations_after_impact"]
        == strict.select("policy", "account", "sale_date", "lot_id")
        .unique()
        .filter(pl.col("policy") == "optimizer")
        .height
    )
