"""How the runner splits a backtest into work items for its processes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from rebalancer.backtest.policies import parse_policy
from rebalancer.backtest.runner import BacktestConfig, work_items


def test_optimizer_policies_are_separate_items_scheduled_first() -> None:
    specs = BacktestConfig(policies=("never", "monthly", "optimizer", "optimizer@1000"),
                           frontier_bands=(0.1,)).policy_specs()  # fmt: skip
    job = SimpleNamespace(
        accounts={"a1": None, "a2": None}, policies={s: parse_policy(s) for s in specs}
    )
    items = work_items(cast(Any, job))
    heavy, light = ("optimizer", "optimizer@1000"), ("never", "monthly", "band-abs-10")
    assert items == [("a1", heavy), ("a2", heavy), ("a1", light), ("a2", light)]
    # every (account, policy) pair runs exactly once
    pairs = [(a, p) for a, ps in items for p in ps]
    assert sorted(pairs) == sorted((a, p) for a in ("a1", "a2") for p in specs)


def test_a_run_without_optimizer_policies_has_one_item_per_account() -> None:
    job = SimpleNamespace(accounts={"a1": None}, policies={"never": parse_policy("never")})
    assert work_items(cast(Any, job)) == [("a1", ("never",))]
