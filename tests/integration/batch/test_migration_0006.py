"""Migration 0006 on a database of its own: the recommendations' ``request`` and ``response``
become ``json`` with their storage settings kept, read back unchanged (key order included),
the shared risk model still merges back into a batch row's request, and downgrade restores
``jsonb``."""

from __future__ import annotations

import json
import uuid

import pytest
import sqlalchemy as sa
from migrationrows import seed_rebalance

from rebalancer.adapters import migrate

pytestmark = pytest.mark.integration

_COLUMNS = sa.text(
    "SELECT attname, format_type(atttypid, atttypmod), attstorage, attcompression "
    "FROM pg_attribute WHERE attrelid = 'recommendations'::regclass "
    "AND attname IN ('request', 'response') ORDER BY attname"
)


def _columns(engine: sa.Engine) -> list[tuple[str, str, str, str]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(_COLUMNS)]  # type: ignore[misc]


def test_migration_0006_stores_recommendations_as_json(scratch: sa.Engine) -> None:
    from rebalancer.adapters.repositories.batch_results import stored_request

    migrate.upgrade(scratch, "0005")
    before = _columns(scratch)
    assert [c[1] for c in before] == ["jsonb", "jsonb"]
    response = {"decision": "rebalance", "trades": [{"z": i, "a": [i]} for i in range(900)]}
    request = {"instruments": [{"id": f"I{i:03d}", "price": 10.0 + i} for i in range(900)]}
    risk_model = {"instruments": ["I000"], "covariance": [[0.04]]}
    model_id = uuid.UUID(int=7)
    with scratch.begin() as conn:
        seed_rebalance(conn)
        conn.execute(
            sa.text(
                "INSERT INTO risk_models (id, tenant_id, as_of, content) "
                "VALUES (:id, 't', '2024-06-28', CAST(:rm AS jsonb))"
            ),
            {"id": model_id, "rm": json.dumps(risk_model)},
        )
        for k, ref in ((1, None), (2, model_id)):
            conn.execute(
                sa.text(
                    "INSERT INTO recommendations (id, rebalance_id, tenant_id, account_id, "
                    "decision, status, request, response, risk_model_id) VALUES "
                    "(:id, '00000000-0000-0000-0000-000000000001', 't', 'a', 'rebalance', "
                    "'pending_approval', CAST(:req AS jsonb), CAST(:resp AS jsonb), :ref)"
                ),
                {
                    "id": uuid.UUID(int=k),
                    "req": json.dumps(request),
                    "resp": json.dumps(response),
                    "ref": ref,
                },
            )
    migrate.upgrade(scratch, "0006")
    after = _columns(scratch)
    assert [c[1] for c in after] == ["json", "json"]
    assert [(c[0], c[2], c[3]) for c in after] == [(c[0], c[2], c[3]) for c in before]
    with scratch.begin() as conn:  # a row written as json text keeps its key order
        conn.execute(
            sa.text(
                "INSERT INTO recommendations (id, rebalance_id, tenant_id, account_id, "
                "decision, status, request, response) VALUES "
                "(:id, '00000000-0000-0000-0000-000000000001', 't', 'a', 'no_trade', "
                "'pending_approval', CAST(:req AS json), CAST(:resp AS json))"
            ),
            {"id": uuid.UUID(int=3), "req": '{"z": 1, "a": 2}', "resp": '{"b": 1, "a": 2}'},
        )
    with scratch.connect() as conn:
        rows = {i: r for i, r in conn.execute(sa.text("SELECT id, response FROM recommendations"))}
        assert rows[uuid.UUID(int=1)] == response
        assert list(rows[uuid.UUID(int=3)]) == ["b", "a"]
        assert stored_request(conn, uuid.UUID(int=1)) == request
        assert stored_request(conn, uuid.UUID(int=2)) == {**request, "risk_model": risk_model}
    migrate.downgrade(scratch, "0005")
    assert _columns(scratch) == before
    with scratch.connect() as conn:
        got = conn.execute(
            sa.text("SELECT response FROM recommendations WHERE id = :id"), {"id": uuid.UUID(int=1)}
        ).scalar()
        assert got == response
