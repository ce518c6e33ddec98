"""Recommender.analyze_many answers like analyze one by one; a bad request fails alone."""

from __future__ import annotations

from opt_factory import random_request

from rebalancer.domain.errors import InvalidInput
from rebalancer.optimizer import Recommender
from rebalancer.optimizer.schemas import AnalyzeRequest, AnalyzeResponse

_TIMING = {"solve_time_ms", "total_time_ms", "compiled_cache_hit"}


def _comparable(resp: AnalyzeResponse) -> dict[str, object]:
    body = resp.model_dump()
    body["solver"] = {k: v for k, v in body["solver"].items() if k not in _TIMING}
    return body


def _invalid() -> AnalyzeRequest:
    req = random_request(99, n=4)
    return req.model_copy(update={"targets": {**req.targets, "NOPE": 0.0}})


def test_analyze_many_matches_analyze_one_by_one_and_isolates_errors() -> None:
    reqs = [random_request(s, n=5, lots_per=2) for s in range(3)]
    reqs.insert(1, _invalid())
    reqs.append(random_request(7, n=8, lots_per=3, max_turnover=0.3))
    many = Recommender().analyze_many(reqs)
    one = Recommender()
    assert len(many) == len(reqs)
    assert isinstance(many[1], InvalidInput)
    assert "targets.NOPE" in many[1].fields
    for req, got in zip(reqs, many, strict=True):
        if got is many[1]:
            continue
        assert isinstance(got, AnalyzeResponse)
        assert _comparable(got) == _comparable(one.analyze(req))


def test_analyze_many_of_nothing_is_empty() -> None:
    assert Recommender().analyze_many([]) == []


def _close(a: object, b: object, path: str = "") -> list[str]:
    """Differences between two dumped answers, floats compared to 1e-9 (relative)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys differ"]
        return [d for k in a for d in _close(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} != {len(b)} items"]
        return [d for k, (x, y) in enumerate(zip(a, b, strict=True)) for d in _close(x, y, path)]
    if isinstance(a, float) and isinstance(b, float):
        return [] if abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b)) else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_batched_fast_first_solve_answers_like_analyze() -> None:
    from rebalancer.optimizer import FAST_CHAIN, SolverName
    from rebalancer.optimizer.fast.solver import FastSolver

    fast = FastSolver()
    reqs = [random_request(s, n=6, lots_per=2) for s in range(3)]
    reqs.insert(2, _invalid())
    many = Recommender(solvers=FAST_CHAIN, fast=fast).analyze_many(reqs)
    assert any(batch > 0 for _, batch in fast.compile_ms)  # the first solves ran as one batch
    assert isinstance(many[2], InvalidInput)
    one = Recommender(solvers=FAST_CHAIN, fast=fast)
    for req, got in zip(reqs, many, strict=True):
        if got is many[2]:
            continue
        assert isinstance(got, AnalyzeResponse)
        assert got.solver.name is SolverName.FAST
        assert _close(_comparable(got), _comparable(one.analyze(req))) == []
