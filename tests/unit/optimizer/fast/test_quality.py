"""The fast path against the Clarabel reference on seeded random problems.

CI runs a handful at 50-200 instruments; ``REBALANCER_FAST_SWEEP=N`` runs N more seeds per size
up to 500 instruments (slow: compile time per size bucket and Clarabel solves).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from fast_factory import hard_request

from rebalancer.optimizer import Recommender, SolverName
from rebalancer.optimizer.schemas import AnalyzeRequest, AnalyzeResponse

SWEEP = int(os.environ.get("REBALANCER_FAST_SWEEP", "0"))
CASES = [(50, s) for s in range(4)] + [(200, 100), (200, 101), (500, 200)]
if SWEEP:
    CASES += [(n, 1000 + s) for n in (50, 100, 200, 500) for s in range(SWEEP)]


@pytest.fixture
def recs(ref_rec: Recommender, fast_rec: Recommender) -> tuple[Recommender, Recommender]:
    return ref_rec, fast_rec


def improvement(out: AnalyzeResponse) -> float:
    return out.objective_before.total - out.objective.total


def assert_clean(req: AnalyzeRequest, out: AnalyzeResponse) -> None:
    """No constraint violated after rounding, and the wash-sale rule kept."""
    for c in out.constraints:
        assert c.slack >= -1e-9 * max(1.0, abs(c.limit)), c
    group = {i.id: i.wash_sale_group or i.id for i in req.instruments}
    bought = {group[t.instrument] for t in out.trades if t.side == "buy"}
    loss_sold = {group[t.instrument] for t in out.trades for lot in t.lots if lot.realized_gain < 0}
    assert not bought & loss_sold


@pytest.mark.parametrize(("n", "seed"), CASES)
def test_fast_captures_the_reference_improvement(
    recs: tuple[Recommender, Recommender], n: int, seed: int
) -> None:
    ref, fast = recs
    req = hard_request(seed, n)
    a, b = ref.analyze(req), fast.analyze(req)
    assert a.solver.name is SolverName.CLARABEL
    assert b.solver.name is SolverName.FAST, b.solver.fallbacks
    assert not b.solver.fallbacks
    assert improvement(a) > 0
    assert improvement(b) >= 0.999 * improvement(a)
    assert_clean(req, b)
    # the continuous optimum agrees too (same settled problem, before rounding)
    fa, fb = ref.relaxed_objective(req), fast.relaxed_objective(req)
    f0 = a.objective_before.total
    assert f0 - fb >= 0.999 * (f0 - fa)


def test_binding_limits_are_exercised(recs: tuple[Recommender, Recommender]) -> None:
    """The random problems really bind ADV caps and turnover (else the test proves little)."""
    _, fast = recs
    out = fast.analyze(hard_request(0, 50))
    binding = {c.name.value for c in out.constraints if c.binding}
    slack = {c.name.value: c.slack for c in out.constraints}
    assert slack["turnover"] <= 1e-3
    assert "adv_cap" in binding or slack["adv_cap"] <= 1e-3
    assert any(lot.realized_gain < 0 for t in out.trades for lot in t.lots)
    assert np.isfinite(out.net_benefit) and out.net_benefit > 0
