"""The engine pauses automatic garbage collection while analyses run (optimizer.gc_pause)."""

from __future__ import annotations

import gc
import threading

from rebalancer.optimizer import Recommender
from rebalancer.optimizer import gc_pause as gc_pause_mod
from rebalancer.optimizer.gc_pause import GcPause
from rebalancer.optimizer.samples import random_account
from rebalancer.optimizer.schemas import AnalyzeRequest


def test_collector_is_off_inside_and_back_on_after_nested_pauses() -> None:
    pause = GcPause()
    assert gc.isenabled()
    with pause:
        assert not gc.isenabled()
        with pause:
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_collector_is_back_on_after_an_exception() -> None:
    pause = GcPause()
    try:
        with pause:
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert gc.isenabled()


def test_a_collector_turned_off_by_someone_else_stays_off() -> None:
    pause = GcPause()
    gc.disable()
    try:
        with pause:
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_overlapping_threads_turn_it_on_only_when_the_last_one_leaves() -> None:
    pause = GcPause()
    inside, leave = threading.Event(), threading.Event()

    def other() -> None:
        with pause:
            inside.set()
            leave.wait(5)

    th = threading.Thread(target=other)
    th.start()
    assert inside.wait(5)
    with pause:
        assert not gc.isenabled()
    assert not gc.isenabled()  # the other thread is still inside
    leave.set()
    th.join(5)
    assert gc.isenabled()


def test_overlapping_analyses_still_collect_young_garbage(monkeypatch) -> None:
    """Analyses that never stop overlapping must not keep garbage cycles forever: a leaving one
    collects once the allocation backlog is large."""
    monkeypatch.setattr(gc_pause_mod, "_GC_BACKLOG", 1)
    pause = GcPause()
    gc.collect()
    with pause:  # held open: the collector stays paused
        with pause:
            for _ in range(5 * gc.get_threshold()[0]):
                a: list[object] = []
                a.append(a)  # a reference cycle, garbage once the loop moves on
            before = gc.get_count()[0]
        after = gc.get_count()[0]  # the inner pause left: it collected
        assert not gc.isenabled()
    assert before > gc.get_threshold()[0]
    assert after < before
    assert gc.isenabled()


def test_analyze_runs_with_the_collector_paused_and_restores_it(monkeypatch) -> None:
    seen: list[bool] = []
    rec = Recommender()
    real = rec._finish

    def spy(prep, first):  # type: ignore[no-untyped-def]
        seen.append(gc.isenabled())
        return real(prep, first)

    monkeypatch.setattr(rec, "_finish", spy)
    req = AnalyzeRequest.model_validate(random_account(3, n=8, lots_per=2, k=3))
    out = rec.analyze(req)
    assert out.trades
    assert seen == [False]
    assert gc.isenabled()
    many = rec.analyze_many([req, req], batched=False)
    assert len(many) == 2 and seen == [False, False, False]
    assert gc.isenabled()
