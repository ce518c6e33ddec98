"""Fast path of the recommendation engine: a structure-exploiting primal-dual interior-point
solver in JAX.

Use it through the engine, e.g. ``Recommender(solvers=FAST_CHAIN)``; the conic (CVXPY +
Clarabel) formulation stays the reference and the fallback. See docs/optimizer.md.
"""

from __future__ import annotations

from rebalancer.optimizer.fast.inputs import Bucket
from rebalancer.optimizer.fast.pdip import Settings
from rebalancer.optimizer.fast.solver import FastOutcome, FastSolver, default_cache_dir

__all__ = ["Bucket", "FastOutcome", "FastSolver", "Settings", "default_cache_dir"]
