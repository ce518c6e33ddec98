"""Per-policy metrics of a backtest, computed with Polars from the logs the engine writes.

Definitions (fractions unless named ``_bps`` or ``currency``; see docs/backtesting.md):

- drift of an account on a day: half the sum over instruments and cash of ``|w - w*|`` (the
  one-way turnover that would restore the target); ``avg_drift`` averages it over days and
  accounts, ``max_drift`` is its maximum; ``max_instrument_drift`` the largest ``|w - w*|``;
- ``tracking_error``: annualised (x sqrt 252) standard deviation of the daily active return
  ``sum_i (w_i - w*_i) r_i`` (end-of-day weights, next-day returns), averaged over accounts;
- ``turnover``: traded value / 2 / mean NAV, per year; ``cost_bps``: spread + impact paid /
  mean NAV, per year, in bps; ``cost``: the same in currency, summed over accounts;
- ``pretax_return``: annualised time-weighted return (cash flows removed), mean over accounts;
  ``after_tax_return``: annualised Modified-Dietz return of the after-tax liquidation value
  (NAV - taxes paid - liquidation tax; start value net of its own liquidation tax);
- ``share_optimal``: among graded decisions, the share with
  ``f(decision) - f* <= 0.005 * (f(0) - f*) + min_net_benefit / NAV`` where ``f*`` is the best
  achievable objective of the same request: the least of doing nothing, the decision, and the
  optimizer re-solved without the net-benefit gate and the minimum trade value (whole shares,
  every constraint kept);
- ``wash_sale_violations``: loss sales with a buy of the same wash-sale group within 30 days
  before or after, from the logs alone, a loss being the wash-sale rule's: amount realized net
  of selling costs (half spread + commission) below the basis; ``wash_sale_disallowed`` their
  losses (currency). ``wash_sale_violations_after_impact`` and
  ``wash_sale_disallowed_after_impact``: the same with the realized gain after every cost
  charged, market impact included, as the loss test.
"""

from __future__ import annotations

import math

import polars as pl

from rebalancer.backtest.tax import (
    LossDefinition,
    TaxRates,
    account_taxes,
    tax_alpha,
    wash_sale_violations,
)

TRADING_DAYS = 252
OPTIMAL_TOLERANCE = 0.005
"""Relative tolerance of "within 0.5 % of the best achievable objective"."""


def grade_decisions(decisions: pl.DataFrame) -> pl.DataFrame:
    """Add ``gap`` (fraction of NAV), ``gap_currency`` and ``optimal`` to graded decisions."""
    g = decisions.filter(pl.col("graded") & pl.col("best_objective").is_not_null())
    return g.with_columns(
        (pl.col("objective") - pl.col("best_objective")).alias("gap"),
    ).with_columns(
        (pl.col("gap") * pl.col("nav")).alias("gap_currency"),
        (
            pl.col("gap")
            <= OPTIMAL_TOLERANCE * (pl.col("objective_before") - pl.col("best_objective")).abs()
            + pl.col("min_net_benefit") / pl.col("nav")
            + 1e-12
        ).alias("optimal"),
    )


def account_returns(daily: pl.DataFrame) -> pl.DataFrame:
    """Per (policy, account): time-weighted return, tracking error, mean NAV, years, flows."""
    d = daily.sort("policy", "account", "date").with_columns(
        pl.col("nav").shift(1).over("policy", "account").alias("prev_nav")
    )
    d = d.with_columns(
        ((pl.col("nav") - pl.col("flow")) / pl.col("prev_nav") - 1.0).alias("ret"),
    )
    return d.group_by("policy", "account").agg(
        (pl.col("ret").drop_nulls() + 1.0).product().alias("growth"),
        pl.col("ret").drop_nulls().count().alias("days"),
        (pl.col("active_return_next").std() * math.sqrt(TRADING_DAYS)).alias("tracking_error"),
        pl.col("nav").mean().alias("mean_nav"),
        pl.col("nav").first().alias("start_nav"),
        pl.col("nav").last().alias("end_nav"),
        pl.col("flow").sum().alias("net_flows"),
        (
            pl.col("flow")
            * (1.0 - pl.int_range(pl.len()).cast(pl.Float64) / pl.len().cast(pl.Float64))
        )
        .sum()
        .alias("weighted_flows"),
        pl.col("drift").mean().alias("avg_drift"),
        pl.col("drift").max().alias("max_drift"),
        pl.col("max_drift").max().alias("max_instrument_drift"),
    )


def per_account(
    frames: dict[str, pl.DataFrame], rates: TaxRates = TaxRates(), shadow: str = "never"
) -> pl.DataFrame:
    """One row per (policy, account) with returns, costs, taxes and tax alpha."""
    r = account_returns(frames["daily"])
    trades = frames["trades"]
    t = trades.group_by("policy", "account").agg(
        pl.col("value").sum().alias("traded_value"),
        pl.col("cost").sum().alias("cost"),
        pl.len().alias("trades"),
    )
    taxes = account_taxes(frames["realized"], frames["final_lots"], rates)
    start = account_taxes(frames["realized"].clear(), frames["start_lots"], rates).select(
        "policy", "account", pl.col("liquidation_tax").alias("start_liquidation_tax")
    )
    alpha = tax_alpha(taxes, shadow, rates)
    out = (
        r.join(t, on=["policy", "account"], how="left")
        .join(taxes, on=["policy", "account"], how="left")
        .join(start, on=["policy", "account"], how="left")
        .join(alpha, on=["policy", "account"], how="left")
        .fill_null(0.0)
        .with_columns(
            (pl.col("days").cast(pl.Float64) / TRADING_DAYS).clip(1.0 / TRADING_DAYS).alias("years")
        )
    )
    after_end = pl.col("end_nav") - pl.col("taxes_paid") - pl.col("liquidation_tax")
    after_start = pl.col("start_nav") - pl.col("start_liquidation_tax")
    dietz = (after_end - after_start - pl.col("net_flows")) / (
        after_start + pl.col("weighted_flows")
    )
    return out.with_columns(
        (pl.col("growth") ** (1.0 / pl.col("years")) - 1.0).alias("pretax_return"),
        ((1.0 + dietz).clip(1e-9) ** (1.0 / pl.col("years")) - 1.0).alias("after_tax_return"),
        (pl.col("traded_value") / 2.0 / pl.col("mean_nav") / pl.col("years")).alias("turnover"),
        (pl.col("cost") / pl.col("mean_nav") / pl.col("years") * 1e4).alias("cost_bps"),
    )


def policy_metrics(
    frames: dict[str, pl.DataFrame], rates: TaxRates = TaxRates(), shadow: str = "never"
) -> pl.DataFrame:
    """One row per policy (see the module docstring for every column)."""
    acc = per_account(frames, rates, shadow)
    by_policy = acc.group_by("policy").agg(
        pl.col("avg_drift").mean(),
        pl.col("max_drift").max(),
        pl.col("max_instrument_drift").max(),
        pl.col("tracking_error").mean(),
        pl.col("turnover").mean(),
        pl.col("cost").sum(),
        pl.col("cost_bps").mean(),
        pl.col("taxes_paid").sum(),
        pl.col("losses_harvested").sum(),
        pl.col("liquidation_tax").sum(),
        pl.col("gross_tax_saving").sum(),
        pl.col("deferred").sum(),
        pl.col("permanent_saving").sum(),
        pl.col("deferral_value").sum(),
        pl.col("pretax_return").mean(),
        pl.col("after_tax_return").mean(),
        pl.col("trades").sum().cast(pl.Int64),
        pl.len().alias("accounts"),
    )
    dec = frames["decisions"]
    d = dec.group_by("policy").agg(
        pl.len().alias("decisions"),
        (pl.col("decision") == "rebalance").sum().cast(pl.Int64).alias("rebalances"),
        (pl.col("decision") == "failed").sum().cast(pl.Int64).alias("failed_decisions"),
    )
    graded = grade_decisions(dec)
    q = graded.group_by("policy").agg(
        pl.col("optimal").mean().alias("share_optimal"),
        pl.len().alias("graded_decisions"),
        pl.col("gap_currency").median().alias("median_gap_currency"),
    )
    w = wash_sale_counts(
        frames, LossDefinition.RULE, "wash_sale_violations", "wash_sale_disallowed"
    )
    w_all = wash_sale_counts(
        frames,
        LossDefinition.AFTER_ALL_COSTS,
        "wash_sale_violations_after_impact",
        "wash_sale_disallowed_after_impact",
    )
    out = (
        by_policy.join(d, on="policy", how="left")
        .join(q, on="policy", how="left")
        .join(w, on="policy", how="left")
        .join(w_all, on="policy", how="left")
        .with_columns(
            pl.col("wash_sale_violations").fill_null(0),
            pl.col("wash_sale_disallowed").fill_null(0.0),
            pl.col("wash_sale_violations_after_impact").fill_null(0),
            pl.col("wash_sale_disallowed_after_impact").fill_null(0.0),
            pl.col("decisions").fill_null(0),
            pl.col("rebalances").fill_null(0),
            pl.col("failed_decisions").fill_null(0),
        )
    )
    order = {p: k for k, p in enumerate(frames["daily"]["policy"].unique(maintain_order=True))}
    return out.sort(pl.col("policy").replace_strict(order, default=len(order)))


def wash_sale_counts(
    frames: dict[str, pl.DataFrame], loss: LossDefinition, name: str, money: str
) -> pl.DataFrame:
    """Per policy: ``name``, the number of loss-sale lots washed by a buy of their group within
    30 days either side (:func:`~rebalancer.backtest.tax.wash_sale_violations` with ``loss``),
    and ``money``, the sum of their losses (currency)."""
    ws = wash_sale_violations(frames["trades"], frames["realized"], loss=loss)
    sales = ws.select("policy", "account", "sale_date", "lot_id").unique()
    losses = frames["realized"].select(
        "policy", "account", pl.col("date").alias("sale_date"), "lot_id", "gain"
    )
    return (
        sales.join(losses, on=["policy", "account", "sale_date", "lot_id"])
        .group_by("policy")
        .agg(pl.len().cast(pl.Int64).alias(name), (-pl.col("gain").sum()).alias(money))
    )


def drift_series(daily: pl.DataFrame) -> pl.DataFrame:
    """Mean drift over accounts per (policy, date), for the drift-over-time chart."""
    return daily.group_by("policy", "date").agg(pl.col("drift").mean()).sort("policy", "date")
