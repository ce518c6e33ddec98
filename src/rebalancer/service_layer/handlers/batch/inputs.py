"""Inputs of a chunk that every account shares: closes, instrument entries and risk models.

A batch asks for the same instruments on the same market date in every chunk. A worker process
keeps the closes (:func:`~rebalancer.service_layer.price_history.cached_closes`, keyed by the
market date) and the covariance estimated from them
(:class:`ChunkInputs`) across chunks, and each chunk builds the instrument entries once per
instrument set. The covariance is stored once per content (``risk_models``, migration 0004) and
referenced by every recommendation solved with it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from rebalancer.adapters.repositories.batch_results import risk_model_id
from rebalancer.analytics.requests import MarketInputs, Quote, market_inputs
from rebalancer.domain.model import Instrument
from rebalancer.service_layer.price_history import CLOSES_TTL_S as CLOSES_TTL_S
from rebalancer.service_layer.price_history import cached_closes as cached_closes


@dataclass(frozen=True)
class SharedRiskModel:
    """A risk model as stored once in ``risk_models`` and referenced by recommendations."""

    id: uuid.UUID
    as_of: date
    content_json: str
    """The ``CovarianceRiskModel`` as JSON text (what the request would have repeated)."""


_RiskKey = tuple[str, date, tuple[str, ...], tuple[float | None, ...], float]
_market_cache: dict[_RiskKey, tuple[MarketInputs, SharedRiskModel]] = {}
_stored: set[tuple[str, uuid.UUID]] = set()
"""``(database url, risk model id)`` committed by this process: no need to send it again."""


class ChunkInputs:
    """The market inputs of one chunk, one :class:`MarketInputs` per instrument set.

    The covariance of an instrument set is reused across the chunks of this process while the
    closes it was estimated from are (same read of :func:`cached_closes`) and the quoted daily
    volatilities are unchanged; instrument entries (prices, ADV, spreads) come from this
    chunk's quotes.
    """

    def __init__(
        self,
        tenant_id: str,
        database: str,
        as_of: date,
        instruments: Mapping[str, Instrument],
        quotes: Mapping[str, Quote],
        closes: tuple[float, Mapping[str, Sequence[float]]],
    ) -> None:
        self.tenant_id = tenant_id
        self.database = database
        self.as_of = as_of
        self.instruments = instruments
        self.quotes = quotes
        self.closes_read_at, self.closes = closes
        self._by_ids: dict[tuple[str, ...], tuple[MarketInputs, SharedRiskModel]] = {}

    def get(self, ids: Sequence[str]) -> tuple[MarketInputs, SharedRiskModel] | None:
        """Inputs of ``ids`` (sorted), or None when one has no quote (the request fails then)."""
        key = tuple(ids)
        hit = self._by_ids.get(key)
        if hit is not None:
            return hit
        if any(i not in self.quotes for i in key):
            return None
        vols = tuple(self.quotes[i].daily_volatility for i in key)
        rkey: _RiskKey = (self.tenant_id, self.as_of, key, vols, self.closes_read_at)
        cached = _market_cache.get(rkey)
        if cached is None:
            market = market_inputs(key, self.instruments, self.quotes, self.closes)
            content = market.risk_model.model_dump_json()
            shared = SharedRiskModel(
                risk_model_id(self.tenant_id, self.as_of, content), self.as_of, content
            )
            if len(_market_cache) > 64:
                _market_cache.clear()
            _market_cache[rkey] = (market, shared)
        else:
            _, shared = cached
            market = market_inputs(
                key, self.instruments, self.quotes, self.closes, risk_model=cached[0].risk_model
            )
        self._by_ids[key] = (market, shared)
        return market, shared

    def unstored(self, used: Sequence[SharedRiskModel]) -> list[SharedRiskModel]:
        """The risk models of ``used`` this process has not committed yet (one each)."""
        out: dict[uuid.UUID, SharedRiskModel] = {}
        for s in used:
            if (self.database, s.id) not in _stored:
                out[s.id] = s
        return list(out.values())

    def committed(self, used: Sequence[SharedRiskModel]) -> None:
        """Remember that ``used`` are stored (call after the commit that wrote them)."""
        _stored.update((self.database, s.id) for s in used)
        if len(_stored) > 4096:
            _stored.clear()
