"""The fast path never makes a request wait for a compile: readiness, background compile,
warm-up of configured and remembered buckets, and the service's chain setting.

Real solves and real compiles (no mocks). Every fast solve here is of bucket 64x4x12, the one
the fast path's own tests use at 50 instruments, so with JAX's persistent compilation cache a
fresh solver loads it in about a second instead of compiling it for 13-16 s.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rebalancer.bootstrap import make_recommender
from rebalancer.config import Settings, SolverChain
from rebalancer.optimizer import DEFAULT_CHAIN, FAST_CHAIN, Recommender, SolverName
from rebalancer.optimizer.data import build_data
from rebalancer.optimizer.fast import Bucket, FastSolver
from rebalancer.optimizer.fast.solver import bucket_label
from rebalancer.optimizer.samples import random_account
from rebalancer.optimizer.schemas import AnalyzeRequest
from rebalancer.optimizer.warmup import Warmup, parse_bucket, parse_buckets

COMPILE_TIMEOUT_S = 600.0
BUCKET = Bucket(64, 4, 12, 1, 1)


def account(
    seed: int, n: int = 50, lots_per: int = 4, k: int = 10, gains_only: bool = False
) -> AnalyzeRequest:
    """50 instruments with 4 lots each and a 10-factor risk model: bucket 64x4x12. With
    ``gains_only`` no lot is at a loss, so no wash-sale round follows the first solve (an
    answer of one solve: its solver is the first solve's)."""
    return AnalyzeRequest.model_validate(random_account(seed, n, lots_per, k, gains_only))


def test_bucket_specs_round_up_like_requests_and_read_back_their_labels() -> None:
    assert Bucket.of(build_data(account(0)).shape) == BUCKET
    assert parse_bucket("50x4x10") == (BUCKET, False)
    assert parse_bucket(" 500 x 4 x 10 ") == (Bucket(512, 4, 12, 1, 1), False)
    assert parse_bucket("64x4x12x2x3+cones") == (Bucket(64, 4, 12, 2, 4), True)
    for key in [(BUCKET, False), (Bucket(64, 4, 12, 2, 4), True)]:
        assert parse_bucket(bucket_label(*key)) == key
    assert bucket_label(BUCKET) == "64x4x12"
    assert parse_buckets("50x4x10, 64x4x12,,512x4x12") == [
        (BUCKET, False),
        (Bucket(512, 4, 12, 1, 1), False),
    ]
    for bad in ("", "64x4", "64x4x12x2", "0x1x1", "64x4x12+cone"):
        with pytest.raises(ValueError, match="instruments x lots x factors"):
            parse_bucket(bad)


def test_cold_bucket_is_answered_by_clarabel_at_once_then_by_the_fast_path(
    tmp_path: Path,
) -> None:
    fast = FastSolver()
    remembered = tmp_path / "warm-buckets.json"
    warm = Warmup(fast, [], recent=4, recent_file=remembered, freeze_gc=False)
    assert warm.start() == []  # nothing configured, nothing remembered yet
    rec = Recommender(solvers=FAST_CHAIN, fast=fast, wait_for_compile=False)
    req = account(1, gains_only=True)
    assert not fast.ready(BUCKET)

    out = rec.analyze(req)
    assert out.solver.solves == 1 and out.decision == "rebalance"
    assert out.solver.name is SolverName.CLARABEL
    steps = [(f.solver, f.reason) for f in out.solver.fallbacks]
    assert steps == [(SolverName.FAST, "fast path compiling bucket 64x4x12")]
    # the same answer the Clarabel chain gives, only with the reason recorded
    ref = Recommender().analyze(req)
    assert [(t.instrument, t.side, t.quantity) for t in out.trades] == [
        (t.instrument, t.side, t.quantity) for t in ref.trades
    ]
    assert out.objective.total == pytest.approx(ref.objective.total, rel=1e-9, abs=1e-12)
    # the bucket was queued once, and remembered for the next start
    assert json.loads(remembered.read_text()) == ["64x4x12"]

    assert fast.wait_ready(BUCKET, timeout=COMPILE_TIMEOUT_S)
    assert fast.compiling() == []
    out = rec.analyze(account(2))  # loss lots too: a wash-sale round, fast both times
    assert out.solver.solves >= 2
    assert out.solver.name is SolverName.FAST
    assert out.solver.fallbacks == []

    # a restarted process warms the remembered bucket before any request needs it
    again = FastSolver()
    warm = Warmup(again, [], recent=4, recent_file=remembered, freeze_gc=False)
    assert warm.start() == ["64x4x12"]
    assert warm.wait(COMPILE_TIMEOUT_S)
    first = Recommender(solvers=FAST_CHAIN, fast=again, wait_for_compile=False).analyze(req)
    assert first.solver.name is SolverName.FAST
    assert first.solver.fallbacks == []


def test_warm_up_compiles_the_configured_buckets_so_the_first_request_is_fast() -> None:
    fast = FastSolver()
    warm = Warmup(fast, parse_buckets("50x4x10"), freeze_gc=False)
    assert warm.start() == ["64x4x12"]
    assert warm.wait(COMPILE_TIMEOUT_S)
    assert fast.ready(BUCKET) and warm.ready_labels() == ["64x4x12"]
    out = Recommender(solvers=FAST_CHAIN, fast=fast, wait_for_compile=False).analyze(account(3))
    assert out.solver.name is SolverName.FAST
    assert out.solver.fallbacks == []


def test_the_chain_setting_picks_the_service_recommender() -> None:
    assert Settings.model_fields["solver_chain"].default is SolverChain.FAST
    fast = FastSolver(compile_cache=None)
    rec = make_recommender(Settings(solver_chain="fast"), fast)
    assert rec.solvers == FAST_CHAIN and rec.fast is fast and not rec.wait_for_compile
    # clarabel keeps the old behaviour: the conic chain first, no fast solver, no JAX needed
    old = make_recommender(Settings(solver_chain="CLARABEL"), fast)
    assert old.solvers == DEFAULT_CHAIN and old.fast is None
    # a recommender built directly still waits for its compiles (batch, backtest, bench)
    assert Recommender(solvers=FAST_CHAIN, fast=fast).wait_for_compile
