"""Reference data: tenants, instruments, versioned models, prices and market data."""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import distinct_on, insert

from rebalancer.adapters import orm
from rebalancer.domain.errors import NotFound, UnknownInstrument
from rebalancer.domain.model import Instrument, ModelPortfolio


class TenantRepository:
    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    def ensure(self, tenant_id: str, name: str = "") -> None:
        """Create the tenant row if missing."""
        self.conn.execute(
            insert(orm.tenants)
            .values(id=tenant_id, name=name or tenant_id)
            .on_conflict_do_nothing()
        )

    def list(self) -> list[str]:
        """Ids of every tenant."""
        q = sa.select(orm.tenants.c.id).order_by(orm.tenants.c.id)
        return list(self.conn.execute(q).scalars())


def _instrument(row: sa.Row[Any]) -> Instrument:
    return Instrument(
        id=row.id,
        asset_class=row.asset_class,
        sector=row.sector,
        lot_size=row.lot_size,
        wash_sale_group=row.wash_sale_group,
        substitutes=tuple(row.substitutes or ()),
        settlement_days=row.settlement_days,
    )


_INSTRUMENT = sa.select(orm.instruments).where(
    orm.instruments.c.id == sa.bindparam("instrument_id")
)
"""Built once: a settlement reads its instrument (a statement built per call costs about as
much client CPU as its round trip)."""


class InstrumentRepository:
    """The security master (shared by all tenants)."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    def upsert(self, inst: Instrument, name: str = "") -> None:
        values = {
            "id": inst.id,
            "name": name,
            "asset_class": inst.asset_class,
            "sector": inst.sector,
            "lot_size": inst.lot_size,
            "wash_sale_group": inst.wash_sale_group,
            "substitutes": list(inst.substitutes),
            "settlement_days": inst.settlement_days,
        }
        stmt = insert(orm.instruments).values(**values)
        self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["id"], set_={k: stmt.excluded[k] for k in values if k != "id"}
            )
        )

    def get(self, instrument_id: str) -> Instrument:
        row = self.conn.execute(_INSTRUMENT, {"instrument_id": instrument_id}).first()
        if row is None:
            raise UnknownInstrument(f"instrument {instrument_id!r} does not exist", ["id"])
        return _instrument(row)

    def get_many(self, ids: Iterable[str], field: str = "instrument") -> dict[str, Instrument]:
        """Instruments by id; raises :class:`UnknownInstrument` naming the first missing id."""
        wanted = sorted(set(ids))
        rows = self.conn.execute(
            sa.select(orm.instruments).where(orm.instruments.c.id.in_(wanted))
        ).all()
        found = {r.id: _instrument(r) for r in rows}
        missing = [i for i in wanted if i not in found]
        if missing:
            raise UnknownInstrument(
                f"unknown instrument {missing[0]!r}; create it first with POST /v1/instruments",
                [field],
            )
        return found

    def list(self) -> list[Instrument]:
        rows = self.conn.execute(sa.select(orm.instruments).order_by(orm.instruments.c.id)).all()
        return [_instrument(r) for r in rows]


@dataclass(frozen=True)
class ModelRecord:
    """A model with its current version and trigger configuration."""

    model: ModelPortfolio
    bands: Mapping[str, Any]
    trigger_rule: Mapping[str, Any] | None


class ModelRepository:
    """Versioned model portfolios, scoped by tenant."""

    def __init__(self, conn: sa.Connection, tenant_id: str) -> None:
        self.conn = conn
        self.tenant_id = tenant_id

    def save(
        self,
        model: ModelPortfolio,
        bands: Mapping[str, Any] | None = None,
        trigger_rule: Mapping[str, Any] | None = None,
    ) -> ModelPortfolio:
        """Create the model or add a new version; returns the stored version."""
        current = self.conn.execute(
            sa.select(orm.models.c.current_version, orm.models.c.tenant_id)
            .where(orm.models.c.id == model.id)
            .with_for_update()
        ).first()
        if current is not None and current.tenant_id != self.tenant_id:
            raise NotFound(f"model {model.id!r} belongs to another tenant; pick another id", ["id"])
        version = 1 if current is None else current.current_version + 1
        if current is None:
            self.conn.execute(
                sa.insert(orm.models).values(
                    id=model.id,
                    tenant_id=self.tenant_id,
                    name=model.name,
                    current_version=version,
                    bands=dict(bands or {}),
                    trigger_rule=dict(trigger_rule) if trigger_rule else None,
                )
            )
        else:
            values: dict[str, Any] = {"current_version": version, "name": model.name}
            if bands is not None:
                values["bands"] = dict(bands)
            if trigger_rule is not None:
                values["trigger_rule"] = dict(trigger_rule)
            self.conn.execute(
                sa.update(orm.models).where(orm.models.c.id == model.id).values(**values)
            )
        self.conn.execute(
            sa.insert(orm.model_versions).values(
                model_id=model.id,
                version=version,
                targets=dict(model.targets),
                cash_target=model.cash_target,
            )
        )
        return ModelPortfolio(model.id, version, dict(model.targets), model.cash_target, model.name)

    def get(self, model_id: str, version: int | None = None) -> ModelRecord:
        m, v = orm.models, orm.model_versions
        q = (
            sa.select(
                m.c.id,
                m.c.name,
                m.c.bands,
                m.c.trigger_rule,
                v.c.version,
                v.c.targets,
                v.c.cash_target,
            )
            .join(v, v.c.model_id == m.c.id)
            .where(m.c.id == model_id, m.c.tenant_id == self.tenant_id)
            .where(v.c.version == (version if version is not None else m.c.current_version))
        )
        row = self.conn.execute(q).first()
        if row is None:
            raise NotFound(f"model {model_id!r} does not exist", ["model_id"])
        model = ModelPortfolio(row.id, row.version, row.targets, row.cash_target, row.name)
        return ModelRecord(model, row.bands or {}, row.trigger_rule)

    def get_many(self, ids: Iterable[str]) -> dict[str, ModelRecord]:
        return {i: self.get(i) for i in sorted(set(ids))}

    def list(self) -> list[ModelRecord]:
        ids = (
            self.conn.execute(
                sa.select(orm.models.c.id)
                .where(orm.models.c.tenant_id == self.tenant_id)
                .order_by(orm.models.c.id)
            )
            .scalars()
            .all()
        )
        return [self.get(i) for i in ids]

    def versions(self, model_id: str) -> builtins.list[ModelPortfolio]:
        self.get(model_id)
        rows = self.conn.execute(
            sa.select(orm.model_versions)
            .where(orm.model_versions.c.model_id == model_id)
            .order_by(orm.model_versions.c.version)
        ).all()
        return [ModelPortfolio(model_id, r.version, r.targets, r.cash_target) for r in rows]


@dataclass(frozen=True)
class Quote:
    """Latest market data of one instrument.

    Attributes
    ----------
    price
        Close, currency per share.
    adv_shares
        Average daily volume, shares.
    daily_volatility
        Standard deviation of daily returns (fraction).
    half_spread_bps
        Half the bid-ask spread, basis points.
    """

    instrument: str
    ts: datetime
    price: Decimal
    adv_shares: float | None
    daily_volatility: float | None
    half_spread_bps: float | None


_LATEST_OF = sa.text(
    """
    SELECT p.instrument, p.ts, p.close, p.adv_shares, p.daily_volatility, p.half_spread_bps
      FROM unnest(CAST(:ids AS text[])) AS i(id)
     CROSS JOIN LATERAL (SELECT * FROM prices WHERE prices.instrument = i.id
                          ORDER BY prices.ts DESC LIMIT 1) AS p
    """
)
"""The newest bar of each named instrument: one index probe per instrument."""


class MarketDataRepository:
    """Prices and per-instrument market statistics (a time series)."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    def add_bars(self, ts: datetime, bars: Sequence[Mapping[str, Any]]) -> None:
        """Upsert one bar per instrument at ``ts`` (one statement for the whole batch)."""
        if not bars:
            return
        rows = [
            {
                "instrument": b["instrument"],
                "ts": ts,
                "close": b["close"],
                "volume": b.get("volume"),
                "adv_shares": b.get("adv_shares"),
                "daily_volatility": b.get("daily_volatility"),
                "half_spread_bps": b.get("half_spread_bps"),
            }
            for b in bars
        ]
        stmt = insert(orm.prices).values(rows)
        cols = ["close", "volume", "adv_shares", "daily_volatility", "half_spread_bps"]
        self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["instrument", "ts"], set_={c: stmt.excluded[c] for c in cols}
            )
        )

    def latest(self, instruments: Iterable[str] | None = None) -> dict[str, Quote]:
        """The most recent bar per instrument (of ``instruments`` when given; those without a
        bar are absent).

        Named instruments are read with one index probe each (the newest key of
        ``(instrument, ts)``); sorting every stored bar of 50 instruments (about 13,000 rows a
        year) cost about 19 ms, paid by every settlement's drift snapshot.
        """
        if instruments is not None:
            ids = sorted(set(instruments))
            rows = self.conn.execute(_LATEST_OF, {"ids": ids}).all() if ids else []
        else:
            p = orm.prices
            q = sa.select(p).ext(distinct_on(p.c.instrument))
            rows = list(self.conn.execute(q.order_by(p.c.instrument, p.c.ts.desc())))
        return {
            r.instrument: Quote(
                r.instrument, r.ts, r.close, r.adv_shares, r.daily_volatility, r.half_spread_bps
            )
            for r in rows
        }

    def closes(self, instruments: Sequence[str], limit_days: int = 260) -> dict[str, list[float]]:
        """Recent daily closes per instrument, oldest first (at most ``limit_days``)."""
        p = orm.prices
        ranked = (
            sa.select(
                p.c.instrument,
                p.c.ts,
                p.c.close,
                sa.func.row_number()
                .over(partition_by=p.c.instrument, order_by=p.c.ts.desc())
                .label("rn"),
            )
            .where(p.c.instrument.in_(list(instruments)))
            .subquery()
        )
        rows = self.conn.execute(
            sa.select(ranked.c.instrument, ranked.c.close)
            .where(ranked.c.rn <= limit_days)
            .order_by(ranked.c.instrument, ranked.c.ts)
        ).all()
        out: dict[str, list[float]] = {i: [] for i in instruments}
        for r in rows:
            out[r.instrument].append(float(r.close))
        return out

    def as_of(self) -> date | None:
        """Date of the newest stored bar (the market's current date)."""
        ts = self.conn.execute(sa.select(sa.func.max(orm.prices.c.ts))).scalar()
        return ts.date() if ts is not None else None


def dumps(value: Any) -> Any:
    """JSON-safe copy (Decimals and dates as strings) for JSONB columns."""
    return json.loads(json.dumps(value, default=str))
