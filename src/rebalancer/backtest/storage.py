"""Backtest results on disk: one Parquet file per log plus a DuckDB database with every table.

Layout of ``out_dir``: ``<table>.parquet`` for ``daily``, ``trades``, ``realized``,
``decisions``, ``start_lots``, ``final_lots``, ``metrics``, ``accounts`` (per-account metrics)
and ``backtest.duckdb`` holding the same tables (query them with any DuckDB client).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

DB_NAME = "backtest.duckdb"


def save(tables: dict[str, pl.DataFrame], out_dir: Path) -> Path:
    """Write every table to Parquet and into a fresh DuckDB database; return the database path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    db = out_dir / DB_NAME
    if db.exists():
        db.unlink()
    con = duckdb.connect(str(db))
    try:
        for name, frame in tables.items():
            path = out_dir / f"{name}.parquet"
            frame.write_parquet(path)
            if frame.width:
                con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM read_parquet(?)', [str(path)])
    finally:
        con.close()
    return db


def load(out_dir: Path, name: str) -> pl.DataFrame:
    """One table back from its Parquet file."""
    return pl.read_parquet(out_dir / f"{name}.parquet")


def query(out_dir: Path, sql: str) -> pl.DataFrame:
    """Run ``sql`` on the DuckDB database of ``out_dir`` (read-only) as a Polars frame."""
    con = duckdb.connect(str(out_dir / DB_NAME), read_only=True)
    try:
        cur = con.execute(sql)
        names = [d[0] for d in cur.description or []]
        return pl.DataFrame(cur.fetchall(), schema=names, orient="row")
    finally:
        con.close()
