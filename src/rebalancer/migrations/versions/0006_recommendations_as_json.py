"""recommendations' ``request`` and ``response`` stored as ``json`` (checked text) instead of
``jsonb``.

A 10,000-account batch writes 10,000 recommendations of about 70 KB of JSON each (a 46 KB
analysis, a 25 KB request). Converting that text to ``jsonb``'s binary form was most of what
storing a row cost PostgreSQL: measured on the embedded server with ``COPY`` of 2,000 rows of
a 50-instrument analysis, 2.7 ms of server CPU per row as ``jsonb``, 1.15 ms as ``json`` (the
text is still checked to be valid JSON), 0.77 ms as ``text``. Nothing queries inside these
documents on the write path; readers load them whole (psycopg turns both types into the same
Python values) and :func:`rebalancer.adapters.repositories.batch_results.full_request` casts
to ``jsonb`` where it merges the shared risk model back. ``json`` keeps the document's own key
order (``jsonb`` reorders keys).

The type change rewrites the table (an ``ACCESS EXCLUSIVE`` lock for as long as that takes:
run it when no batch is writing). The columns' storage and compression settings (migration
0005) are kept. Downgrade converts back to ``jsonb`` the same way.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_COLUMNS = ("request", "response")
_STORAGE = {"p": "PLAIN", "e": "EXTERNAL", "m": "MAIN", "x": "EXTENDED"}
_COMPRESSION = {"p": "pglz", "l": "lz4"}


def _retype(type_name: str) -> None:
    """Change both columns to ``type_name``, then put back each column's storage and
    compression (a type change resets them to the new type's defaults)."""
    conn = op.get_bind()
    kept = conn.execute(
        sa.text(
            "SELECT attname, attstorage, attcompression FROM pg_attribute "
            "WHERE attrelid = 'recommendations'::regclass AND attname IN ('request', 'response')"
        )
    ).all()
    op.execute(
        "ALTER TABLE recommendations "
        + ", ".join(f"ALTER COLUMN {c} TYPE {type_name} USING {c}::{type_name}" for c in _COLUMNS)
    )
    for name, storage, compression in kept:
        alter = f"ALTER TABLE recommendations ALTER COLUMN {name}"
        op.execute(f"{alter} SET STORAGE {_STORAGE[storage]}")
        if compression in _COMPRESSION:
            op.execute(f"{alter} SET COMPRESSION {_COMPRESSION[compression]}")


def upgrade() -> None:
    _retype("json")


def downgrade() -> None:
    _retype("jsonb")
