"""Size the XLA CPU thread pool of a process before JAX starts its CPU backend.

XLA's CPU client runs every compiled computation on a pool of ``tf_XLAEigen`` threads, one per
CPU the process may run on when the backend starts; the pool cannot be resized later and no
flag of jaxlib 0.10 sets its size (``intra_op_parallelism_threads`` and
``xla_cpu_multi_thread_eigen`` do not). The fast path's solves are chains of small kernels:
on a 2-thread pool the work moves between the two threads and each spin-waits for the other,
so a solve that takes 2.4 ms of CPU on one thread took 3.3-3.8 ms of CPU (2 cores visible,
same wall time; measured on one 50-instrument account repeated, docs/benchmarks.md
"batch-10k"). A batch worker is one process per core, so that spinning is CPU taken from the
other workers and the database.

:func:`limit_xla_threads` restricts the calling thread to ``n`` CPUs while the CPU backend
starts (the pool takes its size from that set), then gives every thread of the process its
previous CPU set back: the pool has ``n`` threads and no thread stays pinned to a CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

_TASKS = Path("/proc/self/task")
_POOL_THREAD = "tf_XLAEigen"


def xla_pool_threads() -> int:
    """Threads of XLA's CPU pool in this process (Linux; 0 before the backend starts or
    where ``/proc`` is not readable)."""
    count = 0
    try:
        for task in _TASKS.iterdir():
            try:
                if (task / "comm").read_text().startswith(_POOL_THREAD):
                    count += 1
            except OSError:  # the thread ended meanwhile
                continue
    except OSError:
        return 0
    return count


def limit_xla_threads(n: int) -> int | None:
    """Start JAX's CPU backend with a pool of ``n`` threads (``n`` <= 0: XLA's default, one
    per CPU). Returns the pool's size, or ``None`` when nothing was done.

    Call it before anything in the process runs JAX (the backend starts once); when it has
    started already, or the platform has no CPU affinity (macOS, Windows), this logs why and
    does nothing. The process's CPU set is the same afterwards.
    """
    if n <= 0:
        return None
    if not hasattr(os, "sched_setaffinity"):
        log.info("xla_threads.unsupported", reason="no CPU affinity on this platform")
        return None
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        log.warning("xla_threads.too_late", reason="JAX's backend had started already")
        return None
    before = os.sched_getaffinity(0)
    if len(before) <= n:
        return None  # the pool is at most n threads anyway
    narrow = set(sorted(before)[:n])
    os.sched_setaffinity(0, narrow)
    try:
        import jax

        jax.devices("cpu")  # starts the CPU backend and its pool, sized by the narrow set
    finally:
        _restore(narrow, before)
    size = xla_pool_threads()
    log.info("xla_threads.limited", threads=size, cpus=len(before))
    return size


def _restore(narrow: set[int], before: set[int]) -> None:
    """Give every thread still restricted to ``narrow`` the CPU set ``before`` (threads the
    backend started inherited ``narrow``)."""
    os.sched_setaffinity(0, before)
    try:
        tasks = list(_TASKS.iterdir())
    except OSError:
        return
    for task in tasks:
        tid = int(task.name)
        try:
            if os.sched_getaffinity(tid) == narrow:
                os.sched_setaffinity(tid, before)
        except OSError:  # the thread ended meanwhile
            continue
