"""Schema migrations (Alembic) run programmatically: ``rebalancer db upgrade``."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at the packaged migration scripts and ``url``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the database schema to ``revision`` (idempotent)."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        # Serialize concurrent upgrades (two processes starting at once).
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(727271)"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(engine: sa.Engine, revision: str) -> None:
    """Take the database schema back to ``revision`` (each migration's downgrade in turn)."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(727271)"))
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def time_series_backend(engine: sa.Engine) -> str:
    """``"timescaledb"`` when the time-series tables are hypertables, else ``"plain"``."""
    with engine.connect() as conn:
        value = conn.execute(
            sa.text("SELECT value FROM schema_info WHERE key = 'time_series_backend'")
        ).scalar()
    return str(value or "plain")
