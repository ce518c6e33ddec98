"""Automatic garbage collection paused while analyses run (one pause per process)."""

from __future__ import annotations

import gc
import threading
from types import TracebackType

__all__ = ["GcPause", "gc_pause"]

_GC_BACKLOG = 50
"""While analyses overlap without pause, young-generation collections run once this many times
the first-generation threshold of container allocations has accumulated."""


class GcPause:
    """Automatic cyclic garbage collection paused while any analysis of the process runs.

    An analysis allocates tens of thousands of short-lived containers (arrays' lists, the
    response's models), nearly all freed by reference counting when the caller drops the answer.
    With the collector on, each allocation burst triggers young collections that walk the objects
    still alive (the response under construction) and promote them to the old generations,
    whose collections then walk them again: 3-4 ms of CPU per ``analyze`` at 500 instruments
    (docs/optimizer.md). Paused, nothing is walked; the first allocation after the last analysis
    ends runs the collections the counts call for, as usual.

    Thread-safe and reentrant: the collector is paused from the first analysis entering until
    the last one leaves, and never turned on if something else had turned it off. So that
    overlapping analyses cannot keep it off for good, a leaving analysis runs a young collection
    itself (and a full one when the old generation's count calls for it) once the allocations
    since the last collection exceed :data:`_GC_BACKLOG` times the first threshold.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._paused = False

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0 and gc.isenabled():
                gc.disable()
                self._paused = True
            self._depth += 1

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._depth -= 1
            if not self._paused:
                return
            if self._depth == 0:
                self._paused = False
                gc.enable()
                return
            young, _, old = gc.get_count()
            first, _, third = gc.get_threshold()
            if young > _GC_BACKLOG * max(first, 1):
                gc.collect(2 if old + 1 >= third else 1)


gc_pause = GcPause()
"""The process's one pause (shared by every recommender and thread)."""
