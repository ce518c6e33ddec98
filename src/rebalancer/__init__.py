"""rebalancer: keeps investment portfolios on target.

Drift detection, triggers, a convex tax-aware optimizer, exactly-once orders, execution and
settlement tracking, on PostgreSQL and the Apache Pulsar protocol.
"""

__version__ = "0.1.0"
