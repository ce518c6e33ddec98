"""Database schema as SQLAlchemy Core tables (the single source for Alembic autogenerate).

Conventions: user-chosen ids (accounts, models, instruments, lots) are text; system-generated ids
(recommendations, orders, events) are UUIDs. Shares are ``NUMERIC(20, 6)``, money
``NUMERIC(20, 6)`` in the account currency, weights ``DOUBLE PRECISION`` fractions of NAV.
Every tenant-owned table carries ``tenant_id`` and every repository query filters on it.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

SHARES = sa.Numeric(20, 6)
MONEY = sa.Numeric(20, 6)
TS = sa.DateTime(timezone=True)


def _now() -> sa.TextClause:
    return sa.text("now()")


tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", TS, nullable=False, server_default=_now()),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", sa.Text, sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("key_hash", sa.Text, nullable=False, unique=True),
    sa.Column("scopes", pg.ARRAY(sa.Text), nullable=False),
    sa.Column("created_at", TS, nullable=False, server_default=_now()),
    sa.Column("revoked_at", TS),
)

households = sa.Table(
    "households",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("tenant_id", sa.Text, sa.ForeignKey("tenants.id"), nullable=False, index=True),
    sa.Column("name", sa.Text, nullable=False, server_default=""),
    sa.Column("targets", pg.JSONB),
    sa.Column("links", pg.JSONB, nullable=False, server_default="[]"),
)

instruments = sa.Table(
    "instruments",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False, server_default=""),
    sa.Column("asset_class", sa.Text, nullable=False),
    sa.Column("sector", sa.Text, nullable=False),
    sa.Column("lot_size", sa.Integer, nullable=False, server_default="1"),
    sa.Column("wash_sale_group", sa.Text),
    sa.Column("substitutes", pg.ARRAY(sa.Text), nullable=False, server_default="{}"),
    sa.Column("settlement_days", sa.Integer, nullable=False, server_default="1"),
    sa.Column("currency", sa.Text, nullable=False, server_default="USD"),
    sa.CheckConstraint("lot_size >= 1", name="lot_size_positive"),
)

models = sa.Table(
    "models",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("tenant_id", sa.Text, sa.ForeignKey("tenants.id"), nullable=False, index=True),
    sa.Column("name", sa.Text, nullable=False, server_default=""),
    sa.Column("current_version", sa.Integer, nullable=False),
    sa.Column("bands", pg.JSONB, nullable=False, server_default="{}"),
    sa.Column("trigger_rule", pg.JSONB),
    sa.Column("created_at", TS, nullable=False, server_default=_now()),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("model_id", sa.Text, sa.ForeignKey("models.id"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("targets", pg.JSONB, nullable=False),
    sa.Column("cash_target", sa.Float, nullable=False),
    sa.Column("created_at", TS, nullable=False, server_default=_now()),
)

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("tenant_id", sa.Text, sa.ForeignKey("tenants.id"), nullable=False, index=True),
    sa.Column("household_id", sa.Text, sa.ForeignKey("households.id")),
    sa.Column("name", sa.Text, nullable=False, server_default=""),
    sa.Column("tax_type", sa.Text, nullable=False, server_default="taxable"),
    sa.Column("currency", sa.Text, nullable=False, server_default="USD"),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("created_at", TS, nullable=False, server_default=_now()),
    sa.Column("updated_at", TS, nullable=False, server_default=_now()),
)

sleeves = sa.Table(
    "sleeves",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column(
        "account_id",
        sa.Text,
        sa.ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("model_id", sa.Text, sa.ForeignKey("models.id"), nullable=False, index=True),
    sa.Column("share", sa.Float, nullable=False),
    sa.CheckConstraint("share > 0 AND share <= 1", name="share_range"),
)

tax_lots = sa.Table(
    "tax_lots",
    metadata,
    sa.Column("lot_id", sa.Text, primary_key=True),
    sa.Column(
        "account_id",
        sa.Text,
        sa.ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("instrument", sa.Text, sa.ForeignKey("instruments.id"), nullable=False),
    sa.Column("quantity", SHARES, nullable=False),
    sa.Column("cost_basis", MONEY, nullable=False),
    sa.Column("acquired", sa.Date, nullable=False),
    sa.CheckConstraint("quantity > 0", name="quantity_positive"),
)

cash_balances = sa.Table(
    "cash_balances",
    metadata,
    sa.Column(
        "account_id", sa.Text, sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("currency", sa.Text, primary_key=True, server_default="USD"),
    sa.Column("settled", MONEY, nullable=False, server_default="0"),
    sa.Column("unsettled_proceeds", MONEY, nullable=False, server_default="0"),
    sa.Column("unsettled_purchases", MONEY, nullable=False, server_default="0"),
)

prices = sa.Table(
    "prices",
    metadata,
    sa.Column("instrument", sa.Text, primary_key=True),
    sa.Column("ts", TS, primary_key=True),
    sa.Column("close", MONEY, nullable=False),
    sa.Column("volume", sa.Float),
    sa.Column("adv_shares", sa.Float),
    sa.Column("daily_volatility", sa.Float),
    sa.Column("half_spread_bps", sa.Float),
    sa.Index("ix_prices_ts", "ts"),
)

drift_snapshots = sa.Table(
    "drift_snapshots",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("ts", TS, primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("nav", MONEY, nullable=False),
    sa.Column("total_abs_drift", sa.Float, nullable=False),
    sa.Column("max_abs_drift", sa.Float, nullable=False),
    sa.Column("tracking_error", sa.Float),
    sa.Column("details", pg.JSONB, nullable=False),
    sa.Index("ix_drift_snapshots_ts", "ts"),
)

trigger_evaluations = sa.Table(
    "trigger_evaluations",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column(
        "account_id", sa.Text, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("ts", TS, nullable=False, server_default=_now()),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("fired", sa.Boolean, nullable=False),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("inputs", pg.JSONB, nullable=False, server_default="{}"),
    sa.Column("period_key", sa.Text),
    sa.Column("rebalance_id", pg.UUID(as_uuid=True)),
    sa.Index("ix_trigger_evaluations_account_ts", "account_id", "ts"),
    sa.Index(
        "uq_trigger_period",
        "account_id",
        "kind",
        "period_key",
        unique=True,
        postgresql_where=sa.text("period_key IS NOT NULL AND fired"),
    ),
)

batches = sa.Table(
    "batches",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False, index=True),
    sa.Column("model_id", sa.Text, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("model_version", sa.Integer, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("reasons", pg.JSONB, nullable=False, server_default="[]"),
    sa.Column("total", sa.Integer, nullable=False, server_default="0"),
    sa.Column("queued", sa.Integer, nullable=False, server_default="0"),
    sa.Column("skipped", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_by", sa.Text, nullable=False, server_default=""),
    sa.Column("started_at", TS, nullable=False, server_default=_now()),
    sa.Column("finished_at", TS),
)
"""A batch rebalance: one rebalance per account following a model (see docs/deployment.md)."""

rebalances = sa.Table(
    "rebalances",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False, index=True),
    sa.Column(
        "account_id",
        sa.Text,
        sa.ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("reasons", pg.JSONB, nullable=False, server_default="[]"),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", TS, nullable=False, server_default=_now()),
    sa.Column("updated_at", TS, nullable=False, server_default=_now()),
    sa.Column("batch_id", pg.UUID(as_uuid=True), sa.ForeignKey("batches.id"), index=True),
    # Closing the loop (migration 0002): a follow-up rebalance of a partly done one links to it;
    # the unique constraint makes a second follow-up of one rebalance impossible.
    sa.Column(
        "parent_rebalance_id", pg.UUID(as_uuid=True), sa.ForeignKey("rebalances.id"), unique=True
    ),
    sa.Column("remainder_round", sa.Integer, nullable=False, server_default="0"),
    # migration 0009: when its rebalance_triggered event was last published (creation, requeue);
    # unlike updated_at, a trigger that joins the open rebalance does not stamp it
    sa.Column("published_at", TS, nullable=False, server_default=_now()),
    # migrations 0007/0009: what the sweeper's stalled_requests reads, without scanning the tenant
    sa.Index(
        "ix_rebalances_requested",
        "tenant_id",
        "published_at",
        postgresql_where=sa.text("status = 'requested' AND batch_id IS NULL"),
    ),
)

recommendations = sa.Table(
    "recommendations",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column(
        "rebalance_id",
        pg.UUID(as_uuid=True),
        sa.ForeignKey("rebalances.id"),
        nullable=False,
        index=True,
    ),
    sa.Column("tenant_id", sa.Text, nullable=False, index=True),
    sa.Column(
        "account_id", sa.Text, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("decision", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("net_benefit", MONEY, nullable=False, server_default="0"),
    # ``json``, not ``jsonb`` (migration 0006): written far more often than queried inside
    sa.Column("request", pg.JSON, nullable=False),
    sa.Column("response", pg.JSON, nullable=False),
    sa.Column("created_at", TS, nullable=False, server_default=_now()),
    sa.Column("approved_at", TS),
    sa.Column("approved_by", sa.Text),
    # Migration 0004: set by the batch path; ``request`` then holds no "risk_model" key, the full
    # request is ``request || {"risk_model": risk_models.content}``.
    sa.Column("risk_model_id", pg.UUID(as_uuid=True), sa.ForeignKey("risk_models.id")),
)

risk_models = sa.Table(
    "risk_models",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False, index=True),
    sa.Column("as_of", sa.Date, nullable=False),
    sa.Column("content", pg.JSONB, nullable=False),
    sa.Column("created_at", TS, nullable=False, server_default=_now()),
)
"""A covariance risk model (``CovarianceRiskModel`` JSON) shared by the recommendations of a
batch; the id is derived from its content (migration 0004)."""

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column(
        "recommendation_id",
        pg.UUID(as_uuid=True),
        sa.ForeignKey("recommendations.id"),
        nullable=False,
    ),
    sa.Column("tenant_id", sa.Text, nullable=False, index=True),
    sa.Column(
        "account_id",
        sa.Text,
        sa.ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("instrument", sa.Text, sa.ForeignKey("instruments.id"), nullable=False),
    sa.Column("side", sa.Text, nullable=False),
    sa.Column("quantity", SHARES, nullable=False),
    sa.Column("filled_quantity", SHARES, nullable=False, server_default="0"),
    sa.Column("avg_fill_price", MONEY),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("order_type", sa.Text, nullable=False, server_default="market"),
    sa.Column("limit_price", MONEY),
    sa.Column("time_in_force", sa.Text, nullable=False, server_default="day"),
    sa.Column("lots", pg.JSONB, nullable=False, server_default="[]"),
    sa.Column("arrival_price", MONEY),
    sa.Column("estimated_cost_bps", sa.Float),
    sa.Column("reason", sa.Text),
    sa.Column("sequence", sa.Integer, nullable=False, server_default="0"),
    sa.Column("wave", sa.Integer, nullable=False, server_default="0"),
    sa.Column("state", pg.JSONB, nullable=False, server_default="{}"),
    sa.Column("block_id", pg.UUID(as_uuid=True), index=True),
    sa.Column("requested_quantity", SHARES),
    sa.Column("sent_at", TS),
    sa.Column("send_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", TS, nullable=False, server_default=_now()),
    sa.Column("updated_at", TS, nullable=False, server_default=_now()),
    sa.UniqueConstraint(
        "recommendation_id",
        "account_id",
        "instrument",
        name="uq_orders_recommendation_account_instrument",
    ),
    sa.CheckConstraint("quantity > 0", name="quantity_positive"),
    sa.CheckConstraint("filled_quantity <= quantity", name="filled_le_quantity"),
)

block_orders = sa.Table(
    "block_orders",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False, index=True),
    sa.Column("instrument", sa.Text, sa.ForeignKey("instruments.id"), nullable=False),
    sa.Column("side", sa.Text, nullable=False),
    sa.Column("quantity", SHARES, nullable=False),
    sa.Column("filled_quantity", SHARES, nullable=False, server_default="0"),
    sa.Column("avg_fill_price", MONEY),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("limit_price", MONEY),
    sa.Column("time_in_force", sa.Text, nullable=False, server_default="day"),
    sa.Column("arrival_price", MONEY),
    sa.Column("children", pg.JSONB, nullable=False, server_default="[]"),
    sa.Column("allocated", pg.JSONB, nullable=False, server_default="{}"),
    sa.Column("state", pg.JSONB, nullable=False, server_default="{}"),
    sa.Column("reason", sa.Text),
    sa.Column("sent_at", TS),
    sa.Column("send_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", TS, nullable=False, server_default=_now()),
    sa.Column("updated_at", TS, nullable=False, server_default=_now()),
    sa.CheckConstraint("quantity > 0", name="quantity_positive"),
    sa.CheckConstraint("filled_quantity <= quantity", name="filled_le_quantity"),
)

cost_estimates = sa.Table(
    "cost_estimates",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("instrument", sa.Text, primary_key=True),
    sa.Column("half_spread_bps", sa.Float, nullable=False),
    sa.Column("observations", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_observed_bps", sa.Float),
    sa.Column("updated_at", TS, nullable=False, server_default=_now()),
)

executions = sa.Table(
    "executions",
    metadata,
    sa.Column("report_id", sa.Text, primary_key=True),
    sa.Column("order_id", pg.UUID(as_uuid=True), index=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("fill_quantity", SHARES, nullable=False, server_default="0"),
    sa.Column("fill_price", MONEY),
    sa.Column("cumulative_quantity", SHARES, nullable=False, server_default="0"),
    sa.Column("sequence", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("venue_time", TS, nullable=False),
    sa.Column("received_at", TS, nullable=False, server_default=_now()),
    # When the sweeper raised the fill's settlement_overdue alert (migration 0002; once per fill).
    sa.Column("overdue_alerted_at", TS),
    # Migration 0011: the account of the order (NULL for a block's own reports and for reports
    # of unknown orders), and whether this is a counted fill of an account's order that has no
    # settlement outcome yet (cleared when its confirmation is recorded). The unsettled-cash
    # totals, the unsettled counts of a recommendation and the overdue sweep read the fills in
    # flight through the partial index instead of testing every fill of the history against
    # ``settlements``.
    sa.Column("account_id", sa.Text),
    sa.Column("awaiting_settlement", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index(
        "ix_executions_awaiting_settlement",
        "account_id",
        postgresql_where=sa.text("awaiting_settlement"),
    ),
)

settlements = sa.Table(
    "settlements",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("report_id", sa.Text, nullable=False, unique=True),
    sa.Column("order_id", pg.UUID(as_uuid=True), nullable=False, index=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column(
        "account_id",
        sa.Text,
        sa.ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("instrument", sa.Text, nullable=False),
    sa.Column("side", sa.Text, nullable=False),
    sa.Column("quantity", SHARES, nullable=False),
    sa.Column("price", MONEY, nullable=False),
    sa.Column("trade_date", sa.Date, nullable=False),
    sa.Column("settle_date", sa.Date, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("applied_at", TS, nullable=False, server_default=_now()),
)

realized_gains = sa.Table(
    "realized_gains",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("settlement_id", sa.Text, sa.ForeignKey("settlements.id"), nullable=False),
    sa.Column("account_id", sa.Text, nullable=False, index=True),
    sa.Column("lot_id", sa.Text, nullable=False),
    sa.Column("instrument", sa.Text, nullable=False),
    sa.Column("quantity", SHARES, nullable=False),
    sa.Column("proceeds", MONEY, nullable=False),
    sa.Column("cost", MONEY, nullable=False),
    sa.Column("gain", MONEY, nullable=False),
    sa.Column("term", sa.Text, nullable=False),
    sa.Column("settle_date", sa.Date, nullable=False),
    sa.Column("trade_date", sa.Date, nullable=False),
    sa.Index(
        "ix_realized_gains_recent_losses",
        "account_id",
        "trade_date",
        postgresql_where=sa.text("gain < 0"),
    ),
)

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column(
        "account_id",
        sa.Text,
        sa.ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("level", sa.Text, nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("severity", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("band", sa.Float),
    sa.Column("message", sa.Text, nullable=False, server_default=""),
    sa.Column("raised_at", TS, nullable=False, server_default=_now()),
    sa.Column("cleared_at", TS),
    sa.Column("acknowledged_at", TS),
    sa.Column("acknowledged_by", sa.Text),
    # migration 0010: a settlement clears its fill's raised settlement_overdue alert by key
    sa.Index(
        "ix_alerts_raised_kind_key",
        "kind",
        "key",
        postgresql_where=sa.text("state = 'raised'"),
    ),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("event_id", pg.UUID(as_uuid=True), nullable=False, unique=True),
    sa.Column("topic", sa.Text, nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("created_at", TS, nullable=False, server_default=_now()),
    sa.Column("published_at", TS),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    # Id of the inserting transaction: the status stream reads rows in (txid, id) order below
    # the oldest running transaction, so it never skips a row committed late.
    sa.Column(
        "txid",
        sa.BigInteger,
        nullable=False,
        server_default=sa.text("(pg_current_xact_id()::text)::bigint"),
    ),
    sa.Index("ix_outbox_unpublished", "id", postgresql_where=sa.text("published_at IS NULL")),
    sa.Index("ix_outbox_type_txid", "type", "txid", "id"),
)

processed_events = sa.Table(
    "processed_events",
    metadata,
    sa.Column("consumer", sa.Text, primary_key=True),
    sa.Column("event_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("processed_at", TS, nullable=False, server_default=_now()),
)

# Migration 0008: per consumer process, the largest recent delay between an execution
# report's ``occurred_at`` and its handling (seconds); the order sweeper waits that much longer.
consumer_lag = sa.Table(
    "consumer_lag",
    metadata,
    sa.Column("consumer", sa.Text, primary_key=True),
    sa.Column("lag_s", sa.Float, nullable=False),
    sa.Column("measured_at", TS, nullable=False, server_default=_now()),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("method", sa.Text, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("request_hash", sa.Text, nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("response", pg.JSONB),
    sa.Column("created_at", TS, nullable=False, server_default=_now()),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False, index=True),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("entity", sa.Text, nullable=False),
    sa.Column("entity_id", sa.Text, nullable=False),
    sa.Column("detail", pg.JSONB, nullable=False, server_default="{}"),
    sa.Column("at", TS, nullable=False, server_default=_now()),
)

schema_info = sa.Table(
    "schema_info",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

TIME_SERIES_TABLES = ("prices", "drift_snapshots")
"""Tables that become TimescaleDB hypertables (partitioned on ``ts``) when the extension exists."""
