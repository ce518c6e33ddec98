"""Risk cones on the fast path: both chains on seeded problems with tracking-error and VaR limits.

Run from the repo root: ``.venv/bin/python -m bench.cones [--sizes 50,200] [--seeds 6]
[--no-write]``. Writes the "risk-cones" section of docs/benchmarks.md.

The problems are the unit tests' seeded test-factory accounts
(``tests/unit/optimizer/fast/fast_factory.hard_request``: loss and gain lots, binding ADV caps,
turnover caps, no-buy and no-sell lists, wash-sale groups, cash floors), each with one of five
risk limits derived from its own unconstrained answer: a binding tracking-error limit
(``te_bind``), a VaR limit just above the current one (``var_bind``), a VaR and a tracking-error
limit the current portfolio breaks by 20 % (``var_viol``, ``te_viol``) and both limits together
(``both``). Each problem is analysed end to end by the reference chain (Clarabel) and the fast
chain, one after the other in this process; problems the reference proves infeasible are
counted apart.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path
from typing import Any

from bench._report import markdown_table, write_section
from rebalancer.domain.errors import InfeasibleRebalance
from rebalancer.optimizer import FAST_CHAIN, Recommender, SolverName
from rebalancer.optimizer.schemas import AnalyzeRequest, AnalyzeResponse

_FACTORY = Path(__file__).resolve().parent.parent / "tests/unit/optimizer/fast/fast_factory.py"


def _hard_request() -> Any:
    spec = importlib.util.spec_from_file_location("fast_factory", _FACTORY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.hard_request


hard_request = _hard_request()
CASES = ("te_bind", "var_bind", "var_viol", "te_viol", "both")


def cone_request(ref: Recommender, seed: int, n: int, case: str) -> AnalyzeRequest:
    """The seeded problem ``seed`` of ``n`` instruments with the risk limit ``case``."""
    risk = ref.analyze(hard_request(seed, n)).risk
    te_mid = 0.5 * (risk.tracking_error_before + risk.tracking_error_after)
    extra = {
        "te_bind": {"max_tracking_error": te_mid},
        "var_bind": {"max_var": 1.001 * risk.var_before},
        "var_viol": {"max_var": 0.8 * risk.var_before},
        "te_viol": {"max_tracking_error": 0.8 * risk.tracking_error_before},
        "both": {"max_tracking_error": te_mid, "max_var": 0.9 * risk.var_before},
    }[case]
    req: AnalyzeRequest = hard_request(seed, n, **extra)
    return req


def _timed(rec: Recommender, req: AnalyzeRequest) -> tuple[AnalyzeResponse | None, float]:
    t0 = time.perf_counter()
    try:
        out = rec.analyze(req)
    except InfeasibleRebalance:
        out = None
    return out, (time.perf_counter() - t0) * 1e3


def _gain(out: AnalyzeResponse) -> float:
    return out.objective_before.total - out.objective.total


def run(n: int, seeds: int) -> list[object]:
    ref, fast = Recommender(), Recommender(solvers=FAST_CHAIN)
    fast.analyze(hard_request(0, n))  # compile the bucket without cones outside the timings
    fast.analyze(cone_request(ref, 0, n, "te_bind"))  # and the one with them
    shares: list[float] = []
    ref_ms: list[float] = []
    fast_ms: list[float] = []
    answered = infeasible = 0
    reasons: dict[str, int] = {}
    for seed in range(seeds):
        for case in CASES:
            req = cone_request(ref, seed, n, case)
            a, ms_a = _timed(ref, req)
            b, ms_b = _timed(fast, req)
            if a is None or b is None:
                infeasible += 1
                continue
            ref_ms.append(ms_a)
            fast_ms.append(ms_b)
            if b.solver.name is SolverName.FAST and not b.solver.fallbacks:
                answered += 1
            for f in b.solver.fallbacks:
                key = f.reason.split(" (")[0]
                reasons[key] = reasons.get(key, 0) + 1
            shares.append(_gain(b) / _gain(a) if _gain(a) > 0 else 1.0)
    fell = "; ".join(f"{k}: {v}" for k, v in sorted(reasons.items())) or "none"
    return [
        n,
        len(shares),
        infeasible,
        f"{answered} of {len(shares)}",
        f"{min(shares):.5f}",
        statistics.median(ref_ms),
        statistics.median(fast_ms),
        fell,
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="50,200", help="comma-separated instrument counts")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    rows = [run(int(n), args.seeds) for n in args.sizes.split(",")]
    table = markdown_table(
        [
            "instruments",
            "feasible problems",
            "infeasible (both chains)",
            "fast path answered",
            "worst share of Clarabel's improvement",
            "Clarabel chain analyze P50 ms",
            "fast chain analyze P50 ms",
            "fast-path fallbacks (reason: count)",
        ],
        rows,
    )
    notes = (
        f"Seeds 0-{args.seeds - 1} of the unit tests' `hard_request`, five risk limits each "
        f"({', '.join(CASES)}; see the script's docstring). 'fast path answered': no fallback in "
        "any round; the quality test asks for at least 0.999 of Clarabel's improvement. Both "
        "chains run end to end (wash-sale rounds, rounding, checks, response), one after the "
        "other in one process."
    )
    body = f"{table}\n\n{notes}\n"
    if args.no_write:
        print(body)
        return
    write_section(
        "risk-cones",
        "Risk cones: tracking-error and VaR limits on both chains (bench/cones.py)",
        body,
        command=f"python -m bench.cones --sizes {args.sizes} --seeds {args.seeds}",
    )


if __name__ == "__main__":
    main()
