"""One reference and one fast recommender per session, so each size bucket compiles once."""

from __future__ import annotations

import pytest

from rebalancer.optimizer import FAST_CHAIN, Recommender


@pytest.fixture(scope="session")
def ref_rec() -> Recommender:
    return Recommender()


@pytest.fixture(scope="session")
def fast_rec() -> Recommender:
    return Recommender(solvers=FAST_CHAIN)
