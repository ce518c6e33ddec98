"""Block fill increments, good-faith buy sizing, the realized-cost estimator and quality stats."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rebalancer.domain import quality as q
from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.execution import (
    BuyToSize,
    ExecutionPolicy,
    allocate_increment,
    block_id_for,
    size_buys,
    update_half_spread,
)
from rebalancer.domain.orders import BlockChild, Side

D = Decimal


@given(
    sizes=st.lists(st.integers(1, 50), min_size=2, max_size=5),
    cuts=st.lists(st.integers(1, 40), min_size=1, max_size=6),
    lot=st.sampled_from([1, 5, 10]),
)
def test_increments_sum_exactly_and_never_overfill(
    sizes: list[int], cuts: list[int], lot: int
) -> None:
    children = [BlockChild(f"o{i}", f"a{i}", D(s * lot)) for i, s in enumerate(sizes)]
    total = sum(c.quantity for c in children)
    allocated: dict[str, Decimal] = {}
    done = D(0)
    for cut in cuts:
        inc = min(D(cut), total - done)
        if inc <= 0:
            break
        shares = allocate_increment("b", "X", Side.BUY, children, allocated, inc, lot)
        assert sum(shares.values()) == inc
        for k, v in shares.items():
            allocated[k] = allocated.get(k, D(0)) + v
        done += inc
        for c in children:
            assert allocated.get(c.order_id, D(0)) <= c.quantity
    if done == total:
        assert all(allocated[c.order_id] == c.quantity for c in children)


def test_increment_is_pro_rata_in_lots() -> None:
    children = [BlockChild("o1", "a1", D(300)), BlockChild("o2", "a2", D(100))]
    assert allocate_increment("b", "X", Side.SELL, children, {}, D(200), 10) == {
        "o1": D(150),
        "o2": D(50),
    }
    with pytest.raises(InvalidInput):
        allocate_increment("b", "X", Side.SELL, children, {"o1": D(300)}, D(200), 10)


def test_block_id_is_deterministic_and_order_free() -> None:
    assert block_id_for(["x", "y"]) == block_id_for(["y", "x"]) != block_id_for(["x"])


def test_buys_are_sized_to_buying_power_in_lots() -> None:
    buys = [BuyToSize("b1", D(100), D(20), 10), BuyToSize("b2", D(50), D(10), 1)]
    assert size_buys(buys, D(5000)) == {"b1": D(100), "b2": D(50)}  # 2,500 fits
    sized = size_buys(buys, D(1250))  # half: 50 and 25 shares
    assert sized == {"b1": D(50), "b2": D(25)}
    sized = size_buys(buys, D(1000))  # factor 0.4: 40 and 20
    assert sum(sized[b.order_id] * b.price for b in buys) <= 1000
    assert size_buys(buys, D(-5)) == {"b1": D(0), "b2": D(0)}


def test_half_spread_estimator_smooths_and_clips() -> None:
    assert update_half_spread(5.0, 0, 12.0) == (12.0, 1)  # first observation replaces
    new, n = update_half_spread(10.0, 1, 5.0)
    assert (new, n) == (pytest.approx(9.0), 2)  # 0.8 * 10 + 0.2 * 5
    assert update_half_spread(10.0, 3, -40.0)[0] == pytest.approx(8.0)  # clipped at 0
    assert update_half_spread(10.0, 3, 10_000.0)[0] == pytest.approx(48.0)  # clipped at 200
    with pytest.raises(InvalidInput):
        update_half_spread(1.0, 1, 1.0, alpha=0.0)


def test_execution_policy_checks_the_offset() -> None:
    with pytest.raises(InvalidInput) as err:
        ExecutionPolicy(limit_offset_bps=D(-1))
    assert err.value.fields == ["execution.limit_offset_bps"]


def _o(side: Side, req: int, fill: int, avg: str, arr: str, est: float | None) -> q.OrderOutcome:
    return q.OrderOutcome(
        "o", "X", date(2024, 1, 2), side, D(req), D(fill), D(avg), D(arr), est, True
    )


def test_quality_stats_by_hand() -> None:
    orders = [
        _o(Side.BUY, 10, 10, "101", "100", 50.0),  # +100 bps, w 1000
        _o(Side.SELL, 20, 10, "99", "100", None),  # +100 bps, w 1000
    ]
    s = q.stats("all", orders)
    assert s.shortfall_bps == pytest.approx(100.0)
    assert s.estimated_cost_bps == pytest.approx(50.0) and s.slippage_bps == pytest.approx(50.0)
    assert s.fill_rate == pytest.approx(20 / 30)
    assert s.shortfall_currency == D(20)
    c = q.completion("d", ["complete"] * 19 + ["failed", "trading", "no_trade"])
    assert c.completion_rate == pytest.approx(0.95) and c.meets_target is False
    assert q.completion("d", ["complete"] * 20).meets_target is True
