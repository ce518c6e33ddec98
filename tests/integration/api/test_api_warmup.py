"""POST /v1/analyze with the fast chain (the service's default): a request never waits for a
compile. A bucket not compiled yet is answered by Clarabel at once with the reason, and
compiled in the background; the warm-up at start-up compiles the configured buckets first.

Real runtime, app, lifespan and compiles. The suite's own settings run the Clarabel chain
(tests/conftest.py), so these tests build fast-chain runtimes on the same servers. Bucket
64x4x12 is the one the fast path's tests use, so the persistent compilation cache spares all
but one cold compile of the session.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from apihelpers import READ, ok
from fastapi.testclient import TestClient

from rebalancer.optimizer.samples import random_account

pytestmark = pytest.mark.integration

COMPILE_TIMEOUT_S = 600.0


def account(seed: int, gains_only: bool = False) -> dict[str, Any]:
    """JSON of an account of 50 instruments, 4 lots each, a 10-factor risk model (bucket
    64x4x12). ``gains_only``: no loss lot, so the answer is one solve (no wash-sale round)."""
    return random_account(seed, gains_only=gains_only)


@contextmanager
def fast_service(settings: Any, warm_buckets: str) -> Iterator[tuple[Any, TestClient]]:
    """A fast-chain runtime on the session's servers, with a fresh fast solver (nothing
    compiled in memory), and a client that runs the app's lifespan (the warm-up)."""
    from rebalancer.bootstrap import bootstrap
    from rebalancer.config import SolverChain
    from rebalancer.entrypoints.api import create_app
    from rebalancer.optimizer.fast import FastSolver

    fast_settings = settings.model_copy(
        update={"solver_chain": SolverChain.FAST, "warm_buckets": warm_buckets, "warm_recent": 0}
    )
    rt = bootstrap(fast_settings, upgrade_schema=False)
    rt.fast = FastSolver()
    try:
        with TestClient(create_app(rt), raise_server_exceptions=False) as client:
            yield rt, client
    finally:
        rt.close()


def test_the_suite_runs_the_clarabel_chain(client: TestClient) -> None:
    body = ok(client.post("/v1/analyze", json=account(7), headers=READ))
    assert body["solver"]["name"] == "CLARABEL"
    assert body["solver"]["fallbacks"] == []


def test_cold_bucket_is_answered_by_clarabel_with_the_reason_then_by_the_fast_path(
    settings: Any,
) -> None:
    from rebalancer.optimizer.fast import Bucket

    bucket = Bucket(64, 4, 12, 1, 1)
    with fast_service(settings, warm_buckets="") as (rt, client):
        assert rt.warmup is not None and rt.warmup.planned == []
        assert not rt.fast.ready(bucket)
        body = ok(client.post("/v1/analyze", json=account(1, gains_only=True), headers=READ))
        assert body["solver"]["name"] == "CLARABEL"
        assert body["solver"]["solves"] == 1
        assert body["solver"]["fallbacks"] == [
            {"solver": "FAST", "reason": "fast path compiling bucket 64x4x12"}
        ]
        assert rt.fast.wait_ready(bucket, timeout=COMPILE_TIMEOUT_S)
        body = ok(client.post("/v1/analyze", json=account(2), headers=READ))
        assert body["solver"]["name"] == "FAST"
        assert body["solver"]["fallbacks"] == []


def test_warm_up_at_start_up_makes_the_first_request_fast(settings: Any) -> None:
    with fast_service(settings, warm_buckets="50x4x10") as (rt, client):
        assert [b.n for b, _ in rt.warmup.planned] == [64]
        assert rt.warmup.wait(COMPILE_TIMEOUT_S)
        body = ok(client.post("/v1/analyze", json=account(3), headers=READ))
        assert body["solver"]["name"] == "FAST"
        assert body["solver"]["fallbacks"] == []
