"""XLA's CPU pool sized by :func:`limit_xla_threads`, in fresh interpreters (the backend of
this test process started long ago)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

_PROBE = """
import json, os, sys
from rebalancer.entrypoints.xla_threads import limit_xla_threads, xla_pool_threads
n = int(sys.argv[1])
before = sorted(os.sched_getaffinity(0))
returned = limit_xla_threads(n)
import jax.numpy as jnp
float(jnp.arange(4.0).sum())  # runs a computation on the pool
again = limit_xla_threads(n)  # the backend runs now: too late, nothing done
masks = sorted({tuple(sorted(os.sched_getaffinity(int(t)))) for t in os.listdir("/proc/self/task")})
print(json.dumps({"before": before, "returned": returned, "again": again,
                  "pool": xla_pool_threads(), "masks": masks}))
"""


def _probe(n: int) -> dict[str, object]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(n)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


needs_cpus = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux and at least 2 CPUs",
)


@needs_cpus
def test_one_thread_pool_and_no_thread_left_pinned() -> None:
    got = _probe(1)
    assert got["returned"] == 1
    assert got["pool"] == 1
    assert got["again"] is None
    # every thread of the process, the pool's included, may run on all CPUs it had before
    assert got["masks"] == [got["before"]]


@needs_cpus
def test_zero_keeps_xla_default_of_one_thread_per_cpu() -> None:
    got = _probe(0)
    assert got["returned"] is None
    assert got["pool"] == len(got["before"])  # type: ignore[arg-type]
    assert got["masks"] == [got["before"]]
