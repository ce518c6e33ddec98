"""Risk-model arrays are derived once per risk-model object (optimizer/memo.py)."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from rebalancer.domain.errors import InvalidInput
from rebalancer.optimizer import memo
from rebalancer.optimizer.data import build_data
from rebalancer.optimizer.samples import random_account
from rebalancer.optimizer.schemas import AnalyzeRequest, CovarianceRiskModel
from rebalancer.optimizer.validation import check_request


def _pair(seed: int) -> tuple[AnalyzeRequest, AnalyzeRequest]:
    """Two different accounts sharing one risk-model object (as a batch chunk builds them)."""
    a = AnalyzeRequest.model_validate(random_account(seed, n=12, lots_per=2, k=3))
    body = random_account(seed + 1, n=12, lots_per=2, k=3)
    body["risk_model"] = a.risk_model
    b = AnalyzeRequest.model_validate(body)
    assert b.risk_model is a.risk_model
    return a, b


def test_shared_risk_model_is_checked_and_factored_once() -> None:
    a, b = _pair(1)
    da, db = build_data(a, check_request(a)), build_data(b, check_request(b))
    assert db.factor_load is da.factor_load
    assert db.specific_sd is da.specific_sd
    assert not da.factor_load.flags.writeable
    # the shared arrays are the ones a fresh, unshared model gives
    fresh = AnalyzeRequest.model_validate(
        a.model_dump(mode="json") | {"risk_model": a.risk_model.model_dump(mode="json")}
    )
    df = build_data(fresh, check_request(fresh))
    assert df.factor_load is not da.factor_load
    np.testing.assert_array_equal(df.factor_load, da.factor_load)
    np.testing.assert_array_equal(df.specific_sd, da.specific_sd)


def test_instrument_mismatch_is_refused_even_when_the_model_was_checked() -> None:
    a, _ = _pair(2)
    check_request(a)  # the model's arrays are memoized now
    body = random_account(3, n=11, lots_per=2, k=3)  # 11 instruments, the model has 12
    body["risk_model"] = a.risk_model
    with pytest.raises(InvalidInput) as err:
        check_request(AnalyzeRequest.model_validate(body))
    assert "risk_model.instruments" in err.value.fields


def test_a_bad_covariance_is_refused_every_time() -> None:
    rm = CovarianceRiskModel(instruments=["A", "B"], covariance=[[1.0, 2.0], [2.0, 1.0]])
    body = {
        "as_of": "2026-11-26",
        "portfolio": {"cash": 1000.0, "lots": []},
        "targets": {"A": 0.5, "B": 0.5},
        "instruments": [{"id": "A", "price": 10.0}, {"id": "B", "price": 20.0}],
        "risk_model": rm,
    }
    for _ in range(2):
        with pytest.raises(InvalidInput, match="not positive semidefinite"):
            check_request(AnalyzeRequest.model_validate(body))
    assert "checked" not in memo.derived(rm)


def test_memo_lives_as_long_as_its_object() -> None:
    rm = CovarianceRiskModel(instruments=["A"], covariance=[[1.0]])
    memo.derived(rm)["x"] = 1
    assert memo.derived(rm) == {"x": 1}
    key = id(rm)
    del rm
    gc.collect()
    assert key not in memo._SLOTS
