"""The batch workers' solver choice: ``--solver fast|clarabel`` and why ``fast`` is the default."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from batchhelpers import load_book

from rebalancer.analytics.requests import involved_instruments, make_request
from rebalancer.entrypoints.batch_worker import (
    DEFAULT_SOLVER,
    BatchSolver,
    default_solver,
    make_engine,
    parse_solver,
)
from rebalancer.optimizer import SolverName
from rebalancer.service_layer.handlers.recommending import default_policy
from rebalancer.service_layer.unit_of_work import UnitOfWork


def test_solver_names_parse_and_a_wrong_one_lists_the_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert parse_solver("FAST") is BatchSolver.FAST
    assert parse_solver(" clarabel ") is BatchSolver.CLARABEL
    with pytest.raises(ValueError, match="--solver='cvx': choose one of fast, clarabel"):
        parse_solver("cvx")
    monkeypatch.delenv("REBALANCER_BATCH_SOLVER", raising=False)
    monkeypatch.delenv("REBALANCER_BATCH_ENGINE", raising=False)
    assert default_solver() is DEFAULT_SOLVER is BatchSolver.FAST
    monkeypatch.setenv("REBALANCER_BATCH_SOLVER", "clarabel")
    assert default_solver() is BatchSolver.CLARABEL
    assert make_engine(BatchSolver.CLARABEL).solvers[0] is SolverName.CLARABEL
    assert make_engine(BatchSolver.FAST).solvers[0] is SolverName.FAST


def test_fast_default_answers_the_batch_book_like_the_reference(runtime: Any) -> None:
    """Same decision and at least 99.9 % of Clarabel's improvement for every account (the
    fast path's quality tolerance), answered by the fast path itself, not a fallback."""
    book, _ = load_book(runtime.engine, 6, n_instruments=12)
    with UnitOfWork(runtime.engine, "tenant-a") as uow:
        accounts = uow.accounts.get_many([a[0] for a in book.accounts])
        model_ids = {s.model_id for a in accounts for s in a.sleeves}
        models = {k: rec.model for k, rec in uow.models.get_many(model_ids).items()}
        ids = sorted({i for a in accounts for i in involved_instruments(a, models)[1]})
        instruments, quotes = uow.instruments.get_many(ids), uow.market.latest(ids)
        as_of, closes = uow.market.as_of() or date.today(), uow.market.closes(ids)
    policy = default_policy()
    reqs = [make_request(a, models, instruments, quotes, closes, as_of, policy) for a in accounts]
    ref = make_engine(BatchSolver.CLARABEL).analyze_many(reqs)
    fast = make_engine(BatchSolver.FAST).analyze_many(reqs)
    for a, b in zip(ref, fast, strict=True):
        assert not isinstance(a, Exception) and not isinstance(b, Exception), (a, b)
        assert b.solver.name is SolverName.FAST and not b.solver.fallbacks
        assert a.decision == b.decision
        gain = a.objective_before.total - a.objective.total
        assert b.objective_before.total - b.objective.total >= 0.999 * gain - 1e-12
