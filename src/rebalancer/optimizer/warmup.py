"""Warm-up of the fast path at process start: compile the common size buckets in the background.

A cold compile of one bucket takes 13-16 s on the 2-core machine (about 1 s from JAX's
persistent compilation cache in ``$REBALANCER_DATA_DIR/jax-cache``), so the service never
compiles inside a request: its recommenders run with ``wait_for_compile=False`` (a bucket not
compiled yet is answered by the conic chain at once, with the reason in ``solver.fallbacks``,
and queued), and :class:`Warmup` queues the configured buckets on the fast solver's background
compile thread at API and worker start-up. The buckets that requests had to queue are
remembered next to the compilation cache (``warm-buckets.json``), so the next start warms them
too, from the disk cache.

The fast solver freezes the process's long-lived objects (modules, compiled problems, JAX's
caches) after each compile (:func:`~rebalancer.optimizer.fast.solver.freeze_long_lived`), and
the warm-up does it at once when it has nothing to compile: without it a full collection
walks about 260,000 of them, a 250-600 ms pause in a random request at 500 instruments.
"""

from __future__ import annotations

import gc
import json
import re
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import structlog

from rebalancer.optimizer.data import Shape
from rebalancer.optimizer.fast.inputs import Bucket
from rebalancer.optimizer.fast.solver import FastSolver, bucket_label, freeze_long_lived

log = structlog.get_logger(__name__)

RECENT_FILE = "warm-buckets.json"
"""Buckets requests had to queue, most recent first (in the compilation cache directory)."""

_SPEC = re.compile(r"^(\d+)x(\d+)x(\d+)(?:x(\d+)x(\d+))?(\+cones)?$")


def parse_bucket(spec: str) -> tuple[Bucket, bool]:
    """The bucket of ``NxLxF[xSxJ][+cones]``: instruments, lots per instrument, factors, and
    optionally stress scenarios and budgeted sectors, each rounded up to its bucket as a
    request of these sizes would be (``500x4x10`` is bucket ``512x4x12``); ``+cones`` is the
    variant that carries the risk cones (tracking-error or VaR limits). Inverse of
    :func:`~rebalancer.optimizer.fast.solver.bucket_label`.

    Raises
    ------
    ValueError
        When ``spec`` does not have that form.
    """
    m = _SPEC.match(spec.strip().lower().replace(" ", ""))
    if m is None or int(m.group(1)) < 1:
        raise ValueError(
            f"bucket {spec!r}: write instruments x lots x factors, e.g. 512x4x12 "
            "(optionally x scenarios x sectors, and +cones)"
        )
    n, lots, factors = (int(m.group(k)) for k in (1, 2, 3))
    scen, sect = int(m.group(4) or 0), int(m.group(5) or 0)
    shape = Shape(n, max(lots, 1), max(factors, 1), scen, sect)
    return Bucket.of(shape), m.group(6) is not None


def parse_buckets(specs: str | Iterable[str]) -> list[tuple[Bucket, bool]]:
    """Buckets of a comma-separated string (or of a list of specs), in order, without
    repeats; empty items are skipped."""
    items = specs.split(",") if isinstance(specs, str) else list(specs)
    out: list[tuple[Bucket, bool]] = []
    for item in items:
        if item.strip():
            key = parse_bucket(item)
            if key not in out:
                out.append(key)
    return out


class Warmup:
    """Compile the fast path's common buckets on its background thread.

    Parameters
    ----------
    fast
        The (process-wide) fast solver the service's recommenders use.
    buckets
        Buckets to compile at start, e.g. ``parse_buckets("64x4x12,512x4x12")``.
    recent
        Also warm up to this many buckets that requests queued in earlier runs (read from
        ``recent_file``); each bucket a request queues from now on is recorded there.
    recent_file
        Where those buckets are remembered (default: ``warm-buckets.json`` in the fast
        solver's compilation cache directory; none without one).
    freeze_gc
        Call :func:`freeze_long_lived` at once when there is nothing to compile, and whenever
        the compile queue has run empty if ``fast`` does not freeze after each compile itself
        (``FastSolver(freeze_gc=False)``).
    """

    def __init__(
        self,
        fast: FastSolver,
        buckets: Iterable[tuple[Bucket, bool]] = (),
        *,
        recent: int = 0,
        recent_file: Path | None = None,
        freeze_gc: bool = True,
    ) -> None:
        self.fast = fast
        self.buckets = list(buckets)
        self.recent = recent
        if recent_file is None and fast.compile_cache is not None:
            recent_file = fast.compile_cache / RECENT_FILE
        self.recent_file = recent_file
        self.freeze_gc = freeze_gc
        self._lock = threading.Lock()
        self.planned: list[tuple[Bucket, bool]] = []
        """Buckets queued at :meth:`start` (configured first, then remembered ones)."""

    def _remembered(self) -> list[tuple[Bucket, bool]]:
        if not self.recent or self.recent_file is None or not self.recent_file.exists():
            return []
        try:
            labels = json.loads(self.recent_file.read_text())
            return parse_buckets([str(x) for x in labels])[: self.recent]
        except (OSError, ValueError) as exc:
            log.warning("warmup.recent_unreadable", path=str(self.recent_file), error=repr(exc))
            return []

    def _record(self, bucket: Bucket, cones: bool) -> None:
        """Remember a bucket a request queued (most recent first, at most ``recent``)."""
        if not self.recent or self.recent_file is None:
            return
        label = bucket_label(bucket, cones)
        with self._lock:
            try:
                old = json.loads(self.recent_file.read_text()) if self.recent_file.exists() else []
            except (OSError, ValueError):
                old = []
            labels = [label] + [str(x) for x in old if x != label]
            try:
                tmp = self.recent_file.with_suffix(".tmp")
                tmp.write_text(json.dumps(labels[: max(self.recent, 1) * 4]))
                tmp.replace(self.recent_file)
            except OSError as exc:
                log.warning("warmup.recent_unwritable", path=str(self.recent_file), error=repr(exc))

    def _idle(self) -> None:
        if self.freeze_gc and not self.fast.freeze_gc:
            freeze_long_lived()
        log.info("warmup.idle", ready=self.ready_labels(), frozen_objects=gc.get_freeze_count())

    def start(self) -> list[str]:
        """Queue the buckets (returns their labels) and return at once."""
        plan = list(self.buckets)
        for key in self._remembered():
            if key not in plan:
                plan.append(key)
        self.planned = plan
        self.fast.on_miss = self._record
        self.fast.on_idle = self._idle
        queued = [key for key in plan if self.fast.compile_later(*key)]
        labels = [bucket_label(*key) for key in plan]
        log.info("warmup.started", buckets=labels, queued=len(queued))
        if not queued and self.freeze_gc:
            freeze_long_lived()
        return labels

    def ready_labels(self) -> list[str]:
        """Labels of the planned buckets compiled so far."""
        return [bucket_label(*key) for key in self.planned if self.fast.ready(*key)]

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every planned bucket is compiled; returns whether they all are."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for bucket, cones in self.planned:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self.fast.wait_ready(bucket, cones, left):
                return False
        return True


__all__ = ["RECENT_FILE", "Warmup", "freeze_long_lived", "parse_bucket", "parse_buckets"]
