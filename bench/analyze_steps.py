"""Where the time of one ``analyze`` goes: CPU per request of each step, on the fast chain.

Run from the repo root: ``.venv/bin/python -m bench.analyze_steps [--reps N] [--no-write]``.
Writes the "analyze-steps" section of docs/benchmarks.md.

Times the steps of real ``Recommender.analyze`` calls (wrapped in this process only, the
engine is unchanged) for three kinds of account: ``bench.analyze.make_request`` at 500
instruments (4 lots each) and at 50, and ``samples.random_account`` (50 instruments, 1-2 lots,
what the batch workers see). Each figure is the median over requests of the CPU time of this
thread spent in that step per request (XLA's own threads are not in it: "fast solves" counts
the Python of the two solves and the wait for XLA's answer). Steps nest: "request checks and
arrays" holds ``check_request`` and ``build_data``; "fast solves" holds the solver's own
update, assembly and acceptance checks.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from bench._report import markdown_table, write_section
from bench.analyze import make_request
from rebalancer.optimizer import FAST_CHAIN, Recommender, engine
from rebalancer.optimizer.fast import solver as fast_solver
from rebalancer.optimizer.problem import CompiledProblem
from rebalancer.optimizer.samples import random_account
from rebalancer.optimizer.schemas import AnalyzeRequest

STEPS: list[tuple[str, Any, str]] = [
    ("request checks and arrays (_prepare)", engine.Recommender, "_prepare"),
    ("  check_request", engine, "check_request"),
    ("  build_data", engine, "build_data"),
    ("fast solves, 2 per request (FastSolver.solve)", fast_solver.FastSolver, "solve"),
    ("  acceptance checks (FastSolver._outcome)", fast_solver.FastSolver, "_outcome"),
    ("problem updates (CompiledProblem.update)", CompiledProblem, "update"),
    ("NumPy checks (CompiledProblem.checks)", CompiledProblem, "checks"),
    ("objective parts (CompiledProblem.parts)", CompiledProblem, "parts"),
    ("rounding and repair (_round)", engine.Recommender, "_round"),
    ("response (build_response)", engine, "build_response"),
]


def _timed(fn: Callable[..., Any], label: str, spent: dict[str, float]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[label] += time.thread_time() - t0

    return wrapper


def measure(requests: list[AnalyzeRequest]) -> dict[str, float]:
    """Median CPU ms per request of each step and of the whole ``analyze``."""
    rec = Recommender(solvers=FAST_CHAIN)
    rec.analyze(requests[0])  # compiles (or loads) the size bucket
    spent: dict[str, float] = defaultdict(float)
    # the attributes as stored (a staticmethod stays one), restored afterwards
    saved = [(owner, name, vars(owner)[name]) for _, owner, name in STEPS]
    for label, owner, name in STEPS:
        timed = _timed(getattr(owner, name), label, spent)
        static = isinstance(vars(owner)[name], staticmethod)
        setattr(owner, name, staticmethod(timed) if static else timed)
    per: dict[str, list[float]] = defaultdict(list)
    try:
        for req in requests[1:]:
            spent.clear()
            t0 = time.thread_time()
            rec.analyze(req)
            per["analyze (whole)"].append(time.thread_time() - t0)
            for label, _, _ in STEPS:
                per[label].append(spent[label])
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)
    return {k: float(np.median(v)) * 1e3 for k, v in per.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=60, help="requests per kind of account")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    kinds = {
        "500 x 4 lots": [make_request(s, 500) for s in range(args.reps + 1)],
        "50 x 4 lots": [make_request(s, 50) for s in range(args.reps + 1)],
        "random_account 50": [
            AnalyzeRequest.model_validate(random_account(s)) for s in range(args.reps + 1)
        ],
    }
    cols = {k: measure(v) for k, v in kinds.items()}
    labels = ["analyze (whole)", *(label for label, _, _ in STEPS)]
    rows = [[label, *(cols[k][label] for k in kinds)] for label in labels]
    table = markdown_table(["step (CPU ms per request, this thread, P50)", *kinds], rows)
    notes = (
        f"{args.reps} requests per kind, fast chain, one process, the steps of real `analyze` "
        "calls wrapped by this script. This thread's CPU only: the XLA work of the solves runs "
        "on XLA's threads (see the 'analyze' section for process CPU and wall time). Indented "
        "steps are part of the step above them."
    )
    body = f"{table}\n\n{notes}\n"
    if args.no_write:
        print(body)
        return
    write_section(
        "analyze-steps",
        "Where the time of one analyze goes (bench/analyze_steps.py)",
        body,
        command="python bench/analyze_steps.py " + (f"--reps {args.reps}"),
    )


if __name__ == "__main__":
    main()
