"""Migration 0004 on a database of its own: ``risk_models`` and ``recommendations.risk_model_id``
appear; downgrade puts the shared covariance back into every referencing request."""

from __future__ import annotations

import json
import uuid

import pytest
import sqlalchemy as sa
from migrationrows import seed_rebalance

from rebalancer.adapters import migrate

pytestmark = pytest.mark.integration


def test_migration_0004_up_and_down_restores_the_full_requests(scratch: sa.Engine) -> None:
    migrate.upgrade(scratch, "0004")
    assert "risk_models" in sa.inspect(scratch).get_table_names()
    cols = {c["name"] for c in sa.inspect(scratch).get_columns("recommendations")}
    assert "risk_model_id" in cols
    risk_model = {"instruments": ["A", "B"], "covariance": [[0.04, 0.01], [0.01, 0.09]]}
    shared = {"as_of": "2024-06-28", "instruments": [{"id": "A"}, {"id": "B"}]}
    live = {**shared, "risk_model": {"instruments": ["A"], "covariance": [[0.01]]}}
    rm = uuid.uuid4()
    with scratch.begin() as conn:
        seed_rebalance(conn)
        conn.execute(
            sa.text(
                "INSERT INTO risk_models (id, tenant_id, as_of, content) "
                "VALUES (:id, 't', '2024-06-28', CAST(:c AS jsonb))"
            ),
            {"id": rm, "c": json.dumps(risk_model)},
        )
        for rec, request, ref in ((1, shared, rm), (2, live, None)):
            conn.execute(
                sa.text(
                    "INSERT INTO recommendations (id, rebalance_id, tenant_id, account_id, "
                    "decision, status, request, response, risk_model_id) VALUES "
                    "(:id, '00000000-0000-0000-0000-000000000001', 't', 'a', 'no_trade', "
                    "'no_trade', CAST(:req AS jsonb), '{}', :ref)"
                ),
                {"id": uuid.UUID(int=rec), "req": json.dumps(request), "ref": ref},
            )
    migrate.downgrade(scratch, "0003")
    assert "risk_models" not in sa.inspect(scratch).get_table_names()
    with scratch.connect() as conn:
        requests = dict(
            conn.execute(sa.text("SELECT id, request FROM recommendations ORDER BY id")).all()
        )
    assert requests[uuid.UUID(int=1)] == {**shared, "risk_model": risk_model}
    assert requests[uuid.UUID(int=2)] == live
