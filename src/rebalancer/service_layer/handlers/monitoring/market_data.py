"""A market-data event: store the bars and re-evaluate every account they touch."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time

from rebalancer.contracts import MarketDataV1
from rebalancer.service_layer.handlers.monitoring.book import evaluate_book
from rebalancer.service_layer.unit_of_work import UnitOfWork


def ingest_market_data(uow: UnitOfWork, event: MarketDataV1) -> datetime:
    """Store one day of bars; returns the bar timestamp (market close of ``as_of``, UTC)."""
    ts = datetime.combine(event.as_of, time(21, 0), tzinfo=UTC)
    uow.market.add_bars(
        ts,
        [
            {
                "instrument": b.instrument,
                "close": b.close,
                "volume": b.volume,
                "adv_shares": b.adv_shares,
                "daily_volatility": b.daily_volatility,
                "half_spread_bps": b.half_spread_bps,
            }
            for b in event.bars
        ],
    )
    return ts


def accounts_touched(uow: UnitOfWork, instruments: Sequence[str]) -> list[str]:
    """Accounts of the tenant holding or targeting any of ``instruments``."""
    wanted = set(instruments)
    held = uow.accounts.holding_instruments()
    ids = {a for a, insts in held.items() if insts & wanted}
    for rec in uow.models.list():
        if wanted & set(rec.model.targets):
            ids.update(uow.accounts.list_ids(model_id=rec.model.id, limit=1_000_000))
    return sorted(ids)


def on_market_data(uow: UnitOfWork, event: MarketDataV1) -> None:
    """Store the bars, then re-evaluate every account (of every tenant) that they touch."""
    ts = ingest_market_data(uow, event)
    for tenant in uow.tenants.list():  # prices are global; accounts belong to tenants
        scoped = uow.scoped(tenant)
        ids = accounts_touched(scoped, [b.instrument for b in event.bars])
        if ids:
            evaluate_book(scoped, scoped.accounts.get_many(ids), ts, source="market_data")
    uow.commit()
