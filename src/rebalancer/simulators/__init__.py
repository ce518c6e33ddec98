"""Simulated counterparties (pure logic, no Pulsar): market-data feed, venue, settlement agent.

The Pulsar wiring lives in ``adapters``/``entrypoints``; these classes only turn contract
payloads into contract payloads, deterministically for a given seed.
"""

from rebalancer.simulators.market import PriceFeed, load_sp500_closes
from rebalancer.simulators.settlement import SettlementAgent, add_business_days, is_business_day
from rebalancer.simulators.venue import SimulatedVenue

__all__ = [
    "PriceFeed",
    "SettlementAgent",
    "SimulatedVenue",
    "add_business_days",
    "is_business_day",
    "load_sp500_closes",
]
