"""Taxes of a backtest: yearly netting, the liquidation tax, honest tax alpha and an independent
wash-sale check of the trade log.

Rules (a simplified US individual; documented in docs/backtesting.md)
--------------------------------------------------------------------
- Only ``taxable`` accounts pay tax; gains in tax-deferred and tax-exempt accounts are ignored.
- Per calendar year, short-term and long-term gains are netted separately, then across: a net
  loss on one side offsets a net gain on the other. A remaining net loss is carried forward
  (first against next year's short-term, then long-term gains); no 3,000 USD ordinary offset.
- Tax = net short-term gain x ``short_term_rate`` + net long-term gain x ``long_term_rate``.
  Taxes are paid from outside the account (they are not withdrawn from its cash).
- The liquidation tax is the tax the open lots would owe if sold at the last close (with the
  carry-forward left), the honest end value of deferred gains.

Tax alpha against the do-nothing shadow (the ``never`` policy with the same cash flows), per
account, in currency:

- ``gross_tax_saving = taxes_paid(shadow) - taxes_paid(policy)`` (the flattering number);
- ``deferred = liquidation_tax(policy) - liquidation_tax(shadow)``: saving given back later
  because harvesting lowered the cost basis (it also carries the effect of different pre-tax
  returns on unrealized gains);
- ``permanent = gross_tax_saving - deferred``: what survives liquidation;
- ``deferral_value = deferred x (1 - (1 + r)^-h)``: the time value of the deferred part at
  discount rate ``r`` over ``h`` years.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import polars as pl

SHORT_TERM_RATE = 0.35
LONG_TERM_RATE = 0.15
WASH_SALE_DAYS = 30


@dataclass(frozen=True, slots=True)
class TaxRates:
    """Tax rates (fractions) and the parameters of the deferral's value."""

    short_term: float = SHORT_TERM_RATE
    long_term: float = LONG_TERM_RATE
    discount_rate: float = 0.04
    """Yearly rate that discounts deferred tax."""
    horizon_years: float = 10.0
    """Years until the deferred tax is assumed paid."""


def net_tax(st: float, lt: float, carry: float, rates: TaxRates) -> tuple[float, float]:
    """Tax of one year's net short-term ``st`` and long-term ``lt`` gains (currency) with a
    carried-forward loss ``carry`` (>= 0); returns ``(tax, carry left)``."""
    st_net = st - carry
    lt_net = lt
    if st_net < 0:
        lt_net += st_net
        st_net = 0.0
    if lt_net < 0:
        st_net += lt_net
        lt_net = 0.0
    if st_net < 0:
        return 0.0, -st_net
    return st_net * rates.short_term + lt_net * rates.long_term, 0.0


def account_taxes(
    realized: pl.DataFrame, lots: pl.DataFrame, rates: TaxRates = TaxRates()
) -> pl.DataFrame:
    """Per (policy, account): taxes paid, gains and losses realized, and liquidation tax.

    Parameters
    ----------
    realized
        Realized gains: ``policy, account, date, gain, term, taxable``.
    lots
        Open lots at the end: ``policy, account, date, quantity, cost_basis, price, acquired,
        taxable``.
    """
    keys: set[tuple[str, str]] = set()
    by_year: dict[tuple[str, str], dict[int, list[float]]] = {}
    for r in realized.iter_rows(named=True):
        k = (r["policy"], r["account"])
        keys.add(k)
        if not r["taxable"]:
            continue
        y = by_year.setdefault(k, {}).setdefault(r["date"].year, [0.0, 0.0])
        y[0 if r["term"] == "short" else 1] += r["gain"]
    unreal: dict[tuple[str, str], list[float]] = {}
    for r in lots.iter_rows(named=True):
        k = (r["policy"], r["account"])
        keys.add(k)
        if not r["taxable"]:
            continue
        u = unreal.setdefault(k, [0.0, 0.0])
        long = (r["date"] - r["acquired"]).days > 365
        u[1 if long else 0] += (r["price"] - r["cost_basis"]) * r["quantity"]
    rows = []
    for k in sorted(keys):
        paid, carry = 0.0, 0.0
        for year in sorted(by_year.get(k, {})):
            st, lt = by_year[k][year]
            tax, carry = net_tax(st, lt, carry, rates)
            paid += tax
        gains = [g for y in by_year.get(k, {}).values() for g in y]
        sub = realized.filter((pl.col("policy") == k[0]) & (pl.col("account") == k[1]))
        taxable_sub = sub.filter(pl.col("taxable"))
        ust, ult = unreal.get(k, [0.0, 0.0])
        liquidation, _ = net_tax(ust, ult, carry, rates)
        rows.append(
            {
                "policy": k[0],
                "account": k[1],
                "taxes_paid": paid,
                "net_realized_gain": float(sum(gains)),
                "losses_harvested": float(
                    -taxable_sub.filter(pl.col("gain") < 0)["gain"].sum() if len(sub) else 0.0
                ),
                "loss_carryforward": carry,
                "liquidation_tax": liquidation,
            }
        )
    schema = {
        "policy": pl.Utf8,
        "account": pl.Utf8,
        "taxes_paid": pl.Float64,
        "net_realized_gain": pl.Float64,
        "losses_harvested": pl.Float64,
        "loss_carryforward": pl.Float64,
        "liquidation_tax": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema)


def tax_alpha(
    taxes: pl.DataFrame, shadow: str = "never", rates: TaxRates = TaxRates()
) -> pl.DataFrame:
    """Per (policy, account): gross saving, deferred and permanent parts against ``shadow``."""
    base = taxes.filter(pl.col("policy") == shadow).select(
        "account",
        pl.col("taxes_paid").alias("shadow_taxes_paid"),
        pl.col("liquidation_tax").alias("shadow_liquidation_tax"),
    )
    factor = 1.0 - (1.0 + rates.discount_rate) ** (-rates.horizon_years)
    return (
        taxes.join(base, on="account", how="inner")
        .with_columns(
            (pl.col("shadow_taxes_paid") - pl.col("taxes_paid")).alias("gross_tax_saving"),
            (pl.col("liquidation_tax") - pl.col("shadow_liquidation_tax")).alias("deferred"),
        )
        .with_columns(
            (pl.col("gross_tax_saving") - pl.col("deferred")).alias("permanent_saving"),
            (pl.col("deferred") * factor).alias("deferral_value"),
        )
        .select(
            "policy",
            "account",
            "gross_tax_saving",
            "deferred",
            "permanent_saving",
            "deferral_value",
        )
    )


class LossDefinition(enum.StrEnum):
    """Which sales count as losses for the independent wash-sale check."""

    RULE = "rule"
    """The wash-sale rule's (and the optimizer's) definition: the amount realized net of
    selling costs (half spread + commission) below the basis, logged by the engine as
    ``realized.wash_sale_loss`` (:func:`rebalancer.domain.wash_sale.is_wash_sale_loss`)."""
    AFTER_ALL_COSTS = "after_all_costs"
    """Stricter: the realized gain after every cost charged, market impact included, below 0."""


def wash_sale_violations(
    trades: pl.DataFrame,
    realized: pl.DataFrame,
    window_days: int = WASH_SALE_DAYS,
    loss: LossDefinition = LossDefinition.RULE,
) -> pl.DataFrame:
    """Loss sales with a buy of the same wash-sale group within ``window_days`` before or after,
    read from the logs alone (independent of the optimizer's own bookkeeping).

    ``loss`` says which sales are losses (see :class:`LossDefinition`; logs without the
    ``wash_sale_loss`` column use the realized gain). A buy does not count against a loss sale
    of the very lot it created when that lot was sold whole on that date. Returns one row per
    (loss sale lot, offending buy).
    """
    keys = ["policy", "account", "group"]
    buys = trades.filter(pl.col("side") == "buy").select(
        *keys, pl.col("date").alias("buy_date"), pl.col("fill_id").alias("buy_fill")
    )
    is_loss = (
        pl.col("wash_sale_loss")
        if loss is LossDefinition.RULE and "wash_sale_loss" in realized.columns
        else pl.col("gain") < 0
    )
    losses = realized.filter(is_loss & pl.col("taxable")).select(
        *keys, pl.col("date").alias("sale_date"), "lot_id"
    )
    if losses.is_empty() or buys.is_empty():
        return pl.DataFrame(schema=_VIOLATION_SCHEMA)
    window = pl.duration(days=window_days)
    near = losses.join(buys, on=keys).filter(
        (pl.col("buy_date") >= pl.col("sale_date") - window)
        & (pl.col("buy_date") <= pl.col("sale_date") + window)
    )
    own_closed = _closed_lots(trades, realized).select(
        "policy", "account", pl.col("lot_id"), pl.col("lot_id").alias("buy_fill")
    )
    return (
        near.join(own_closed, on=["policy", "account", "lot_id", "buy_fill"], how="anti")
        .select(*_VIOLATION_SCHEMA)
        .cast(_VIOLATION_SCHEMA)  # type: ignore[arg-type]
        .sort("policy", "account", "sale_date", "lot_id", "buy_date", "buy_fill")
    )


_VIOLATION_SCHEMA = {
    "policy": pl.Utf8,
    "account": pl.Utf8,
    "sale_date": pl.Date,
    "lot_id": pl.Utf8,
    "buy_fill": pl.Utf8,
    "buy_date": pl.Date,
    "group": pl.Utf8,
}


def _closed_lots(trades: pl.DataFrame, realized: pl.DataFrame) -> pl.DataFrame:
    """Buy lots (``policy, account, lot_id`` = the buy's fill id) whose whole quantity was sold,
    so they cannot be replacement shares of their own loss."""
    bought = trades.filter(pl.col("side") == "buy").select(
        "policy", "account", pl.col("fill_id").alias("lot_id"), pl.col("quantity").alias("bought")
    )
    sold = realized.group_by("policy", "account", "lot_id").agg(pl.col("quantity").sum())
    return (
        bought.join(sold, on=["policy", "account", "lot_id"])
        .filter(pl.col("quantity") >= pl.col("bought") - 1e-9)
        .select("policy", "account", "lot_id")
    )
