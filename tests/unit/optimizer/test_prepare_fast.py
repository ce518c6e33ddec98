"""Request preparation shortcuts: the content memo of small risk-model arrays and the fast
paths of the request checks report exactly what the full checks report."""

from __future__ import annotations

import math
from datetime import date
from typing import Any

import numpy as np
import pytest

from rebalancer.domain.errors import InvalidInput
from rebalancer.optimizer import memo
from rebalancer.optimizer.data import build_data
from rebalancer.optimizer.samples import random_account
from rebalancer.optimizer.schemas import AnalyzeRequest, LotIn
from rebalancer.optimizer.validation import _LOT_FIELDS, _columns, check_request

DAY = date(2024, 1, 2)


def _count(calls: list[int]) -> Any:
    def compute(a: np.ndarray) -> float:
        calls.append(1)
        return float(a.sum())

    return compute


def test_by_content_reuses_a_value_for_equal_content_only() -> None:
    calls: list[int] = []
    compute = _count(calls)
    a = np.arange(4.0).reshape(2, 2)
    assert memo.by_content("t-sum", a, compute) == 6.0
    assert memo.by_content("t-sum", a.copy(), compute) == 6.0  # another object, same bytes
    assert len(calls) == 1
    memo.by_content("t-sum", a.reshape(4), compute)  # other shape
    memo.by_content("t-sum", a.astype(np.float32), compute)  # other dtype
    memo.by_content("t-sum", a + 1.0, compute)  # other numbers
    memo.by_content("t-other", a, compute)  # other derivation
    assert len(calls) == 5


def test_by_content_skips_large_arrays_and_stays_bounded() -> None:
    calls: list[int] = []
    compute = _count(calls)
    big = np.zeros(memo.CONTENT_MAX_BYTES // 8 + 1)
    memo.by_content("t-big", big, compute)
    memo.by_content("t-big", big, compute)
    assert len(calls) == 2
    for k in range(2 * memo.CONTENT_ENTRIES):
        memo.by_content("t-many", np.array([float(k)]), compute)
    assert len(memo._CONTENT) <= memo.CONTENT_ENTRIES


def _body(seed: int = 4) -> dict[str, Any]:
    return random_account(seed, n=6, lots_per=2, k=2)


def test_a_bad_factor_covariance_is_refused_after_a_good_one_was_seen() -> None:
    good = AnalyzeRequest.model_validate(_body())
    check_request(good)
    body = _body()
    body["risk_model"]["factor_covariance"] = [[0.02, 0.0], [0.0, -0.02]]
    for _ in range(2):
        with pytest.raises(InvalidInput, match="symmetric positive semidefinite"):
            check_request(AnalyzeRequest.model_validate(body))


def test_separate_copies_of_a_factor_model_give_the_same_arrays() -> None:
    a = AnalyzeRequest.model_validate(_body(5))
    b = AnalyzeRequest.model_validate(_body(5))
    assert a.risk_model is not b.risk_model
    da, db = build_data(a, check_request(a)), build_data(b, check_request(b))
    np.testing.assert_array_equal(da.factor_load, db.factor_load)
    np.testing.assert_array_equal(da.specific_sd, db.specific_sd)
    assert da.deferred == db.deferred and da.lot_ids == db.lot_ids


def _refusal(body: dict[str, Any]) -> tuple[str, list[str]]:
    with pytest.raises(InvalidInput) as err:
        check_request(AnalyzeRequest.model_validate(body))
    return err.value.detail, list(err.value.fields)


@pytest.mark.parametrize("bad_price_at, subs_at, first", [(1, 3, "price"), (3, 1, "subs")])
def test_the_first_bad_instrument_is_reported(bad_price_at: int, subs_at: int, first: str) -> None:
    body = _body()
    body["instruments"][bad_price_at]["adv_shares"] = math.inf
    body["instruments"][subs_at]["substitutes"] = ["NOPE"]
    detail, fields = _refusal(body)
    if first == "price":
        assert fields == [f"instruments[{bad_price_at}]"]
        assert detail == f"instruments[{bad_price_at}] contains a value that is not a finite number"
    else:
        assert fields == [f"instruments[{subs_at}].substitutes"]
        assert detail.startswith("substitute NOPE of ")


@pytest.mark.parametrize(
    "weights, message",
    [
        ({"S0000": -0.1}, "target weight of S0000 is -0.1; weights must be >= 0"),
        ({"S0000": math.nan}, "target weight of S0000 is nan; weights must be >= 0"),
        ({"S0000": math.inf}, "target weights sum to inf; they must sum to 1"),
        ({"S0001": 0.5}, "target weights sum to "),
    ],
)
def test_target_refusals_are_the_full_checks(weights: dict[str, float], message: str) -> None:
    body = _body()
    body["targets"] = body["targets"] | weights
    detail, _ = _refusal(body)
    assert detail.startswith(message)


def test_a_target_outside_the_instruments_is_named() -> None:
    body = _body()
    body["targets"]["ZZZ"] = 0.0
    assert _refusal(body) == (
        "target ZZZ is not in instruments; add its market data",
        ["targets.ZZZ"],
    )


def test_columns_read_every_way_a_model_is_made() -> None:
    validated = LotIn.model_validate(
        {"lot_id": "a", "instrument": "X", "quantity": 2.0, "cost_basis": 3.0, "acquired": DAY}
    )
    constructed = LotIn.model_construct(
        acquired=DAY, cost_basis=5.0, quantity=4.0, instrument="Y", lot_id="b"
    )
    copied = validated.model_copy(update={"quantity": 6.0, "lot_id": "c"})
    lots = [validated, constructed, copied]
    want = [[getattr(lot, name) for lot in lots] for name in _LOT_FIELDS]
    given: dict[str, Any] = {"lot_id": "d", "instrument": "Z"}  # no quantity, basis, date
    partial = LotIn.model_construct(**given)
    assert _columns(lots, _LOT_FIELDS) == want
    with pytest.raises(KeyError):  # read by name: the missing field is not misplaced
        _columns([*lots, partial], _LOT_FIELDS)
