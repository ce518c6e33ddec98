"""Benchmark drift re-evaluation of a whole book after a price tick.

Run from the repo root: ``.venv/bin/python -m bench.drift [--accounts 10000] [--instruments 50]``.
Writes the "drift" section of docs/benchmarks.md.

The vectorised path is what ``monitoring.evaluate_book`` runs on every market-data event:
weights from holdings and the new prices (one matrix product), ``book_drift`` at the instrument,
sector and asset-class levels with tracking error (one call), and the band screen over the whole
book. Accounts that the screen finds in breach then get a detailed per-key report; that cost is
measured separately since it depends on how many breach. The baseline is the per-account path
(``account_drift`` + ``evaluate_bands`` in a Python loop), timed on a sample and scaled.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench._report import markdown_table, write_section
from rebalancer.domain.book import (
    build_layout,
    evaluate_book_drift,
    level_groups,
    screen_bands,
    weights_matrix,
)
from rebalancer.domain.drift import CovarianceModel, account_drift, book_drift
from rebalancer.domain.model import CASH, Instrument
from rebalancer.domain.monitoring_config import parse_config
from rebalancer.domain.triggers import evaluate_bands

BANDS = parse_config({"sector": 0.08}).bands  # the defaults plus a sector band


def make_book(m: int, n: int, models: int = 20, seed: int = 1) -> dict[str, Any]:
    """m accounts over n instruments following one of ``models`` models, with drift."""
    rng = np.random.default_rng(seed)
    ids = [f"S{j:03d}" for j in range(n)]
    instruments = {
        i: Instrument(
            i,
            asset_class=("equity", "fixed_income", "real_estate")[j % 3],
            sector=f"sector{j % 10}",
        )
        for j, i in enumerate(ids)
    }
    model_w = rng.dirichlet(np.ones(n), size=models) * 0.98
    which = rng.integers(0, models, size=m)
    nav = rng.uniform(5e4, 5e6, size=m)
    prices0 = rng.uniform(10, 300, size=n)
    drifted = np.clip(model_w[which] * rng.lognormal(0.0, 0.08, size=(m, n)), 0, None)
    drifted = drifted / drifted.sum(axis=1, keepdims=True) * 0.98
    qty = np.floor(drifted * nav[:, None] / prices0)
    cash = nav * 0.02
    targets = [{**dict(zip(ids, model_w[k].tolist(), strict=True)), CASH: 0.02} for k in which]
    holdings = [dict(zip(ids, row.tolist(), strict=True)) for row in qty]
    vol = rng.uniform(0.1, 0.4, size=n)
    corr = 0.3 + 0.7 * np.eye(n)
    cov = corr * np.outer(vol, vol)
    return {
        "ids": ids,
        "instruments": instruments,
        "layout": build_layout([f"A{k}" for k in range(m)], holdings, cash.tolist(), targets),
        "targets": targets,
        "prices": prices0 * np.exp(rng.normal(0.0, 0.01, size=n)),  # the tick
        "risk": CovarianceModel(tuple(ids), cov),
    }


def timed(fn: Callable[[], Any], reps: int) -> tuple[list[float], Any]:
    out, times = None, []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times, out


def run(m: int, n: int, reps: int, sample: int) -> list[list[object]]:
    book_in = make_book(m, n)
    layout, risk, insts = book_in["layout"], book_in["risk"], book_in["instruments"]
    prices = np.append(book_in["prices"], 0.0)
    groups = level_groups(layout.columns, insts)

    def vectorised() -> Any:
        W, _ = weights_matrix(layout, prices)
        book = book_drift(W, layout.targets, layout.columns, groups=groups, risk_model=risk)
        return book, screen_bands(book, layout.targets, BANDS, groups)

    rows: list[list[object]] = []
    t_all, (book, screen) = timed(vectorised, reps)
    breached = int(screen.breached.any(axis=0).sum())
    rows.append(
        [
            "vectorised: weights + book_drift (3 levels, TE) + band screen",
            m,
            n,
            reps,
            statistics.median(t_all),
            max(t_all),
            f"{breached} accounts breach a band",
        ]
    )
    t_w, (W, _) = timed(lambda: weights_matrix(layout, prices), reps)
    rows.append(
        [
            "  of which weights from holdings x prices",
            m,
            n,
            reps,
            statistics.median(t_w),
            max(t_w),
            "",
        ]
    )
    t_b, book = timed(
        lambda: book_drift(W, layout.targets, layout.columns, groups=groups, risk_model=risk), reps
    )
    rows.append(["  of which book_drift", m, n, reps, statistics.median(t_b), max(t_b), ""])
    t_s, _ = timed(lambda: screen_bands(book, layout.targets, BANDS, groups), reps)
    rows.append(
        [
            "  of which band screen",
            m,
            n,
            reps,
            statistics.median(t_s),
            max(t_s),
            f"{len(BANDS)} bands",
        ]
    )
    t_e, _ = timed(lambda: evaluate_book_drift(layout, prices, insts, risk), reps)

    # per-account Python loop (the path before: account_drift + evaluate_bands), on a sample
    pos = {c: j for j, c in enumerate(layout.columns)}
    sample_ix = list(range(min(sample, m)))

    def loop() -> None:
        for i in sample_ix:
            w = {c: float(W[i, pos[c]]) for c in layout.columns if W[i, pos[c]] != 0}
            rep = account_drift(f"A{i}", w, book_in["targets"][i], insts, risk_model=risk)
            evaluate_bands(rep, BANDS)

    t_l, _ = timed(loop, max(1, reps // 3))
    scale = m / len(sample_ix)
    rows.append(
        [
            "per-account loop (account_drift + evaluate_bands), scaled",
            m,
            n,
            len(t_l),
            statistics.median(t_l) * scale,
            max(t_l) * scale,
            f"timed on {len(sample_ix)} accounts; "
            f"{statistics.median(t_l) * scale / statistics.median(t_all):.0f}x slower",
        ]
    )
    # detailed reports only for the accounts in breach (what the service adds per tick)
    hit = np.flatnonzero(screen.breached.any(axis=0))[:sample]
    if len(hit):

        def detail() -> None:
            for i in hit:
                w = {c: float(W[i, pos[c]]) for c in layout.columns if W[i, pos[c]] != 0}
                rep = account_drift(f"A{i}", w, book_in["targets"][i], insts)
                evaluate_bands(rep, BANDS)

        t_d, _ = timed(detail, max(1, reps // 3))
        per = statistics.median(t_d) / len(hit)
        rows.append(
            [
                "detailed report + evaluate_bands per breaching account",
                1,
                n,
                len(t_d),
                per,
                max(t_d) / len(hit),
                f"x {breached} breaching = {per * breached:,.0f} ms",
            ]
        )
    del t_e
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--instruments", type=int, default=50)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--sample", type=int, default=500)
    ap.add_argument("--no-write", action="store_true", help="print only")
    a = ap.parse_args()
    rows = run(a.accounts, a.instruments, a.reps, a.sample)
    rows += run(1_000, a.instruments, a.reps, a.sample)
    table = markdown_table(
        ["path", "accounts", "instruments", "runs", "P50 ms", "max ms", "notes"], rows
    )
    body = (
        f"{table}\n\nCPU cores: {os.cpu_count()}. The vectorised row is the work "
        "`monitoring.evaluate_book` does for the whole book on every market-data event before "
        "its per-account database writes (snapshots, evaluation log, alerts), which are not "
        "timed here. Aim: under 1 s for 10,000 accounts x 50 instruments on 2 cores."
    )
    if a.no_write:
        print(body)
    else:
        write_section(
            "drift",
            "Drift re-evaluation after a price tick (bench/drift.py)",
            body,
            command=f"python -m bench.drift --accounts {a.accounts} "
            f"--instruments {a.instruments} --reps {a.reps}",
        )


if __name__ == "__main__":
    main()
