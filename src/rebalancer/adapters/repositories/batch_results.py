"""Stored results of batch rebalances: shared risk models and recommendations that reference them.

Every account of a batch that holds the same instruments on the same day is solved with the same
covariance (55 KB of JSON for 50 instruments). It is stored once in ``risk_models`` (migration
0004), under an id derived from its content, and each recommendation row references it with
``risk_model_id`` and keeps its request without the ``risk_model`` key. :func:`full_request`
gives readers the request as it was solved.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from rebalancer.adapters import orm
from rebalancer.adapters.repositories.bulk import copy_rows

_RISK_MODEL_NAMESPACE = uuid.UUID("5d3c1f0e-8a43-4b1e-9e7c-2f3b6a0d4c11")


def risk_model_id(tenant_id: str, as_of: date, content_json: str) -> uuid.UUID:
    """The id of a risk model: the same content on the same day of a tenant has the same id,
    so every worker of a batch computes it alone and inserts it at most once."""
    digest = hashlib.sha256(content_json.encode()).hexdigest()
    return uuid.uuid5(_RISK_MODEL_NAMESPACE, f"{tenant_id}|{as_of.isoformat()}|{digest}")


def add_risk_models(
    conn: sa.Connection, tenant_id: str, rows: Sequence[tuple[uuid.UUID, date, str]]
) -> None:
    """Insert ``(id, as_of, content JSON text)`` risk models unless stored already."""
    if not rows:
        return
    conn.execute(
        sa.text(
            "INSERT INTO risk_models (id, tenant_id, as_of, content) "
            "VALUES (:id, :tenant, :as_of, CAST(:content AS jsonb)) ON CONFLICT (id) DO NOTHING"
        ),
        [{"id": i, "tenant": tenant_id, "as_of": d, "content": c} for i, d, c in rows],
    )


RECOMMENDATION_COLUMNS = (
    "id",
    "rebalance_id",
    "tenant_id",
    "account_id",
    "decision",
    "status",
    "net_benefit",
    "request",
    "response",
    "risk_model_id",
)
"""Columns of a row of :func:`copy_recommendations` (``request``/``response`` JSON text, the
request without ``risk_model`` when ``risk_model_id`` is set)."""


def copy_recommendations(conn: sa.Connection, rows: Iterable[Sequence[Any]]) -> int:
    """``COPY`` recommendations in; each row follows :data:`RECOMMENDATION_COLUMNS`."""
    return copy_rows(conn, orm.recommendations, RECOMMENDATION_COLUMNS, rows)


def full_request(rec: sa.Table | Any = None) -> sa.ColumnElement[Any]:
    """SQL expression of the request a recommendation was solved with.

    ``request`` itself when the row references no shared risk model, else ``request`` with the
    referenced ``risk_model`` added back. ``rec`` is ``orm.recommendations`` or an alias of it.
    """
    r = orm.recommendations if rec is None else rec
    m = orm.risk_models
    shared = sa.select(m.c.content).where(m.c.id == r.c.risk_model_id).scalar_subquery()
    request = sa.cast(r.c.request, JSONB)  # stored as ``json`` (migration 0006)
    return sa.case(
        (r.c.risk_model_id.is_(None), request),
        else_=request.op("||")(sa.func.jsonb_build_object("risk_model", shared)),
    ).label("request")


def stored_request(conn: sa.Connection, recommendation_id: uuid.UUID) -> dict[str, Any]:
    """The full request (JSON) of one stored recommendation.

    Raises
    ------
    LookupError
        When no recommendation has that id.
    """
    r = orm.recommendations
    row = conn.execute(sa.select(full_request(r)).where(r.c.id == recommendation_id)).first()
    if row is None:
        raise LookupError(f"recommendation {recommendation_id} does not exist")
    return dict(row[0])
