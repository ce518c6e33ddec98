"""Household rebalancing: one problem over every account of a household.

Public API
----------
HouseholdRecommender().analyze(HouseholdRequest) -> HouseholdResponse
    Per-account constraints, household targets, taxes per account type, the wash-sale rule
    across accounts, asset location and optional cash transfers (see docs/households.md).
"""

from __future__ import annotations

from rebalancer.optimizer.household.engine import HouseholdRecommender, check_household
from rebalancer.optimizer.household.schemas import (
    AccountAnswer,
    HouseholdAccount,
    HouseholdPolicy,
    HouseholdRequest,
    HouseholdResponse,
    RecentLossSale,
    TransferLink,
)

_DEFAULT: HouseholdRecommender | None = None


def default_household_recommender() -> HouseholdRecommender:
    """The process-wide household recommender (created on first use)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = HouseholdRecommender()
    return _DEFAULT


__all__ = [
    "AccountAnswer",
    "HouseholdAccount",
    "HouseholdPolicy",
    "HouseholdRecommender",
    "HouseholdRequest",
    "HouseholdResponse",
    "RecentLossSale",
    "TransferLink",
    "check_household",
    "default_household_recommender",
]
