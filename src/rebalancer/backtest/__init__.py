"""Backtesting: replay real price history for a book of accounts under several rebalancing
policies, through the live service's request builder, optimizer and settlement rules.

Public API
----------
BacktestConfig, run_backtest(config, progress=None) -> BacktestResult
    Run (see :mod:`rebalancer.backtest.runner`).
save_results(result, out_dir) -> Path
    Parquet files, a DuckDB database and the HTML report.
"""

from __future__ import annotations

from pathlib import Path

from rebalancer.backtest.metrics import per_account
from rebalancer.backtest.policies import DEFAULT_POLICIES, parse_policy
from rebalancer.backtest.runner import BacktestConfig, BacktestResult, run_backtest


def save_results(result: BacktestResult, out_dir: Path) -> Path:
    """Write the tables (Parquet + DuckDB) and ``report.html`` to ``out_dir``; return the
    report's path."""
    from rebalancer.backtest.report import write_report
    from rebalancer.backtest.storage import save

    tables = {
        **result.frames,
        "metrics": result.metrics,
        "accounts": per_account(result.frames, result.config.rates),
    }
    save(tables, out_dir)
    return write_report(result, out_dir / "report.html")


__all__ = [
    "DEFAULT_POLICIES",
    "BacktestConfig",
    "BacktestResult",
    "parse_policy",
    "run_backtest",
    "save_results",
]
