"""A self-contained HTML report of a backtest (plotly charts, metrics table, caveats)."""

from __future__ import annotations

import html
from pathlib import Path

import plotly.graph_objects as go
import polars as pl

from rebalancer.backtest.metrics import drift_series
from rebalancer.backtest.runner import BacktestResult

_PCT = ("avg_drift", "max_drift", "max_instrument_drift", "tracking_error", "turnover")
_RET = ("pretax_return", "after_tax_return", "share_optimal")
_MONEY = (
    "cost",
    "taxes_paid",
    "losses_harvested",
    "liquidation_tax",
    "gross_tax_saving",
    "deferred",
    "permanent_saving",
    "deferral_value",
)
_COLUMNS = (
    ("policy", "policy"),
    ("avg_drift", "avg drift"),
    ("max_drift", "max drift"),
    ("max_instrument_drift", "max instrument drift"),
    ("tracking_error", "tracking error (ann.)"),
    ("turnover", "turnover (1-way, /yr)"),
    ("cost", "spread+impact (USD)"),
    ("cost_bps", "cost (bps/yr)"),
    ("trades", "trades"),
    ("rebalances", "rebalances"),
    ("taxes_paid", "taxes paid"),
    ("losses_harvested", "losses harvested"),
    ("liquidation_tax", "liquidation tax"),
    ("gross_tax_saving", "gross tax saving vs never"),
    ("deferred", "of which deferred"),
    ("permanent_saving", "permanent saving"),
    ("deferral_value", "value of deferral"),
    ("pretax_return", "pre-tax return (ann.)"),
    ("after_tax_return", "after-tax return (ann.)"),
    ("wash_sale_violations", "wash-sale violations"),
    ("wash_sale_disallowed", "loss disallowed (USD)"),
    ("wash_sale_violations_after_impact", "wash sales counting impact"),
    ("share_optimal", "decisions within 0.5 %"),
    ("graded_decisions", "graded decisions"),
    ("failed_decisions", "failed decisions"),
)


def _fmt(col: str, v: object) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if col in _PCT or col in _RET:
            return f"{v * 100:.2f} %"
        if col in _MONEY:
            return f"{v:,.0f}"
        return f"{v:,.2f}"
    return html.escape(str(v))


def metrics_table(metrics: pl.DataFrame) -> str:
    """The per-policy metrics as an HTML table."""
    cols = [(c, label) for c, label in _COLUMNS if c in metrics.columns]
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(c, row[c])}</td>" for c, _ in cols) + "</tr>"
        for row in metrics.iter_rows(named=True)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def drift_figure(daily: pl.DataFrame) -> go.Figure:
    """Mean account drift over time, one line per policy."""
    fig = go.Figure()
    s = drift_series(daily)
    for policy in s["policy"].unique(maintain_order=True).to_list():
        d = s.filter(pl.col("policy") == policy)
        fig.add_trace(
            go.Scatter(x=d["date"].to_list(), y=(d["drift"] * 100).to_list(), name=policy)
        )
    fig.update_layout(
        title="Drift over time (mean over accounts, half the sum of |w - w*|)",
        yaxis_title="drift (% of NAV)",
        height=450,
    )
    return fig


def frontier_figure(metrics: pl.DataFrame) -> go.Figure:
    """Cost against average drift; absolute bands joined in order of width."""
    fig = go.Figure()
    bands = metrics.filter(pl.col("policy").str.starts_with("band-abs-")).with_columns(
        pl.col("policy").str.strip_prefix("band-abs-").cast(pl.Float64).alias("width")
    )
    bands = bands.sort("width")
    fig.add_trace(
        go.Scatter(
            x=(bands["avg_drift"] * 100).to_list(),
            y=bands["cost_bps"].to_list(),
            text=[f"{w:g} % band" for w in bands["width"].to_list()],
            mode="lines+markers+text",
            textposition="top center",
            name="absolute bands",
        )
    )
    others = metrics.filter(~pl.col("policy").str.starts_with("band-abs-"))
    fig.add_trace(
        go.Scatter(
            x=(others["avg_drift"] * 100).to_list(),
            y=others["cost_bps"].to_list(),
            text=others["policy"].to_list(),
            mode="markers+text",
            textposition="bottom center",
            name="other policies",
        )
    )
    fig.update_layout(
        title="Cost vs drift frontier (lower left is better)",
        xaxis_title="average drift (% of NAV)",
        yaxis_title="spread + impact cost (bps of NAV per year)",
        height=450,
    )
    return fig


_CSS = (
    "body{font-family:sans-serif;margin:2em;max-width:1400px}"
    "table{border-collapse:collapse;font-size:12px}"
    "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
    "th{background:#f4f4f4}td:first-child{text-align:left}"
)


def render(result: BacktestResult) -> str:
    """The whole report as one HTML string (plotly.js loaded from its CDN)."""
    cfg = result.config
    parts = [
        f"<html><head><meta charset='utf-8'><title>rebalancer backtest</title>"
        f"<style>{_CSS}</style></head><body>",
        "<h1>Rebalancing backtest</h1>",
        f"<p>{cfg.start} to {cfg.end}, {cfg.accounts} accounts of the sample book, decisions "
        f"{cfg.decision_frequency}. Real daily closes (skfolio S&amp;P 500 data set): "
        f"{html.escape(', '.join(result.replayed))}. Simulated (seeded): "
        f"{html.escape(', '.join(result.simulated) or 'none')}.</p>",
        "<h2>Metrics per policy</h2>",
        metrics_table(result.metrics),
        drift_figure(result.frames["daily"]).to_html(full_html=False, include_plotlyjs="cdn"),
        frontier_figure(result.metrics).to_html(full_html=False, include_plotlyjs=False),
        "<h2>How to read this</h2><p>See docs/backtesting.md for every definition. Costs are "
        "the optimizer's own spread + impact estimates charged at the close (no slippage "
        "model beyond them); taxes follow a simplified US individual; bond ETFs are "
        "simulated. Tax alpha is against each account's do-nothing shadow (policy "
        "<em>never</em>), split into the part deferred by a lowered basis and the permanent "
        "part.</p></body></html>",
    ]
    return "\n".join(parts)


def write_report(result: BacktestResult, path: Path) -> Path:
    """Write :func:`render` to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(result), encoding="utf-8")
    return path
