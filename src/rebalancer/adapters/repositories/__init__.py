"""Repositories: translate between rows and domain objects; every query is tenant-scoped."""

from rebalancer.adapters.repositories.accounts import AccountRepository
from rebalancer.adapters.repositories.messaging import (
    AuditLog,
    IdempotencyStore,
    OutboxRepository,
    ProcessedEvents,
)
from rebalancer.adapters.repositories.reference import (
    InstrumentRepository,
    MarketDataRepository,
    ModelRepository,
    TenantRepository,
)

__all__ = [
    "AccountRepository",
    "AuditLog",
    "IdempotencyStore",
    "InstrumentRepository",
    "MarketDataRepository",
    "ModelRepository",
    "OutboxRepository",
    "ProcessedEvents",
    "TenantRepository",
]
