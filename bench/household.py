"""Benchmark the household solve: 10 accounts x 500 instruments (household targets, asset
location, a transfer link, cross-account wash-sale settling), one stacked conic problem per
request (index patterns cached per structure).

Run from the repo root: ``.venv/bin/python -m bench.household [--reps N] [--accounts A]
[--instruments N] [--lots L]``. Writes the "household" section of docs/benchmarks.md. Every
household of a run has the same structure (so the compiled problem is reused) but new numbers.
"""

from __future__ import annotations

import argparse
import time
from datetime import date, timedelta
from typing import Any

import numpy as np

from bench._report import markdown_table, write_section
from rebalancer.optimizer.household import HouseholdRecommender, HouseholdRequest

AS_OF = date(2024, 6, 28)
KINDS = ("taxable", "tax_deferred", "tax_exempt", "taxable", "tax_deferred")


def make_household(
    seed: int, accounts: int, n: int, lots_per: int, k: int = 10
) -> HouseholdRequest:
    """A household of ``accounts`` accounts of NAV 0.5-5 million over one ``n``-instrument
    universe (a third fixed income), ``lots_per`` lots per holding, gains and losses."""
    rng = np.random.default_rng(seed)
    ids = [f"S{j:04d}" for j in range(n)]
    price = rng.uniform(10, 300, n)
    instruments = [
        {
            "id": ids[j],
            "price": float(price[j]),
            "adv_shares": float(rng.uniform(2e5, 5e6)),
            "daily_volatility": float(rng.uniform(0.01, 0.03)),
            "half_spread_bps": float(rng.uniform(1, 10)),
            "sector": f"sector{j % 11}",
            "asset_class": "fixed_income" if j % 3 == 0 else "equity",
        }
        for j in range(n)
    ]
    risk_model = {
        "instruments": ids,
        "factor_exposures": rng.normal(0, 0.3, (n, k)).tolist(),
        "factor_covariance": (np.eye(k) * 0.02).tolist(),
        "specific_variance": rng.uniform(0.01, 0.06, n).tolist(),
    }
    accts: list[dict[str, Any]] = []
    for a in range(accounts):
        nav = float(rng.uniform(5e5, 5e6))
        w = rng.dirichlet(np.ones(n)) * 0.97
        lots = []
        for j in range(n):
            shares = max(1.0, np.floor(w[j] * nav / price[j] / lots_per))
            for m in range(lots_per):
                lots.append(
                    {
                        "lot_id": f"A{a}L{j}_{m}",
                        "instrument": ids[j],
                        "quantity": float(shares),
                        "cost_basis": float(price[j] * rng.uniform(0.6, 1.2)),
                        "acquired": (
                            AS_OF - timedelta(days=int(rng.integers(40, 1500)))
                        ).isoformat(),
                    }
                )
        tgt = w * np.exp(rng.normal(0, 0.2, n))
        tgt = tgt / tgt.sum() * 0.98
        targets = {ids[j]: float(tgt[j]) for j in range(n)}
        targets["CASH"] = 1.0 - float(sum(targets.values()))
        accts.append(
            {
                "id": f"A{a}",
                "tax_type": KINDS[a % len(KINDS)],
                "request": {
                    "as_of": AS_OF.isoformat(),
                    "portfolio": {"cash": 0.03 * nav, "lots": lots},
                    "targets": targets,
                    "instruments": instruments,
                    "risk_model": risk_model,
                    "policy": {"risk_aversion": 5.0, "max_turnover": 0.5, "min_cash_weight": 0.01},
                },
            }
        )
    hh = rng.dirichlet(np.ones(n)) * 0.98
    return HouseholdRequest.model_validate(
        {
            "as_of": AS_OF.isoformat(),
            "accounts": accts,
            "targets": {**{ids[j]: float(hh[j]) for j in range(n)}, "CASH": 1 - float(hh.sum())},
            "risk_model": risk_model,
            "links": [
                {"from_account": "A0", "to_account": f"A{min(3, accounts - 1)}", "max_amount": 1e5}
            ]
            if accounts > 1
            else [],
            "policy": {"risk_aversion": 5.0, "account_tracking_weight": 0.2},
        }
    )


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs) * 1e3, q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--accounts", type=int, default=10)
    ap.add_argument("--instruments", type=int, default=500)
    ap.add_argument("--lots", type=int, default=4)
    args = ap.parse_args()
    reqs = [
        make_household(s, args.accounts, args.instruments, args.lots) for s in range(args.reps + 1)
    ]
    rec = HouseholdRecommender()
    t0 = time.perf_counter()
    first = rec.analyze(reqs[0])
    compile_s = time.perf_counter() - t0
    total, cpu, solve, solves, trades = [], [], [], [], []
    for req in reqs[1:]:
        t, c = time.perf_counter(), time.process_time()
        out = rec.analyze(req)
        total.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        solve.append(out.solver.solve_time_ms / 1e3)
        solves.append(out.solver.solves)
        trades.append(sum(len(a.analysis.trades) for a in out.accounts))
    lots = args.accounts * args.instruments * args.lots
    rows: list[list[object]] = [
        [
            f"{args.accounts} x {args.instruments} ({lots:,} lots)",
            f"{compile_s:,.1f} s",
            pct(total, 50),
            pct(total, 99),
            pct(cpu, 50),
            pct(solve, 50),
            pct(solve, 99),
            f"{min(solves)}-{max(solves)}",
            f"{int(np.mean(trades)):,}",
            str(first.solver.name),
        ]
    ]
    body = markdown_table(
        [
            "accounts x instruments",
            "first call",
            "total P50 ms",
            "total P99 ms",
            "CPU P50 ms",
            "solver P50 ms",
            "solver P99 ms",
            "solves",
            "trades",
            "solver",
        ],
        rows,
    )
    body += (
        f"\n\n{args.reps} households after the first (same structure, new numbers); P99 of so "
        "few runs is close to the maximum. `total` includes request checks, building arrays, "
        "every solve (wash-sale settling re-solves), rounding, the NumPy re-check and one "
        "full single-account answer per account; `CPU` is the process CPU time of a request "
        "(the machine is shared, so wall time also measures the other jobs). Household targets, "
        "asset location, one transfer link, account tracking weight 0.2. Engine: the stacked "
        "conic problem assembled with scipy.sparse and solved by Clarabel directly "
        "(docs/households.md)."
    )
    write_section("household", "Household rebalance (bench/household.py)", body)


if __name__ == "__main__":
    main()
