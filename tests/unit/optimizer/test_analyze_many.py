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
