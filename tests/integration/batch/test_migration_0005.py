"""Migration 0005 on a database of its own: the recommendations' ``request`` and ``response``
are stored without ``pglz`` (lz4 where the server has it, else uncompressed out of line), read
back unchanged, and downgrade restores the defaults."""

from __future__ import annotations

import json
import uuid

import pytest
import sqlalchemy as sa
from migrationrows import seed_rebalance

from rebalancer.adapters import migrate

pytestmark = pytest.mark.integration

_SETTINGS = sa.text(
    "SELECT attname, attstorage, attcompression FROM pg_attribute "
    "WHERE attrelid = 'recommendations'::regclass AND attname IN ('request', 'response')"
)


def _settings(engine: sa.Engine) -> dict[str, tuple[str, str]]:
    with engine.connect() as conn:
        return {name: (storage, comp) for name, storage, comp in conn.execute(_SETTINGS)}


def test_migration_0005_stores_recommendations_without_pglz(scratch: sa.Engine) -> None:
    migrate.upgrade(scratch, "0004")
    assert _settings(scratch) == {"request": ("x", ""), "response": ("x", "")}
    migrate.upgrade(scratch, "0005")
    after = _settings(scratch)
    # lz4 compression (storage stays extended) or, without lz4, external storage (no compression)
    assert after in (
        {"request": ("x", "l"), "response": ("x", "l")},
        {"request": ("e", ""), "response": ("e", "")},
    )
    # a large analysis (well above the 2 KB TOAST threshold) reads back unchanged
    trades = [{"instrument": f"I{i:03d}", "lots": [{"lot_id": f"L{i}"}]} for i in range(900)]
    response = {"decision": "rebalance", "trades": trades}
    request = {"instruments": [{"id": f"I{i:03d}", "price": 10.0 + i} for i in range(900)]}
    with scratch.begin() as conn:
        seed_rebalance(conn)
        conn.execute(
            sa.text(
                "INSERT INTO recommendations (id, rebalance_id, tenant_id, account_id, "
                "decision, status, request, response) VALUES "
                "(:id, '00000000-0000-0000-0000-000000000001', 't', 'a', 'rebalance', "
                "'pending_approval', CAST(:req AS jsonb), CAST(:resp AS jsonb))"
            ),
            {"id": uuid.UUID(int=1), "req": json.dumps(request), "resp": json.dumps(response)},
        )
    with scratch.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT request, response, pg_column_size(response) AS stored, "
                "octet_length(response::text) AS text_bytes FROM recommendations"
            )
        ).one()
    assert row.request == request
    assert row.response == response
    if after["response"][0] == "e":  # not compressed: at least as large as its text
        assert row.stored >= row.text_bytes
    migrate.downgrade(scratch, "0004")
    assert _settings(scratch) == {"request": ("x", ""), "response": ("x", "")}
    with scratch.connect() as conn:
        assert conn.execute(sa.text("SELECT response FROM recommendations")).scalar() == response


def _queue_event(engine: sa.Engine, commit: bool) -> None:
    with engine.connect() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO outbox (event_id, topic, key, type, body) "
                "VALUES (:id, 't', 'k', 'status_updated', '\\x7b7d')"
            ),
            {"id": uuid.uuid4()},
        )
        if commit:
            conn.commit()
        else:
            conn.rollback()


def test_outbox_inserts_wake_the_listening_relay_at_commit(scratch: sa.Engine) -> None:
    from rebalancer.adapters.outbox_relay import OutboxListener

    migrate.upgrade(scratch, "0005")
    listener = OutboxListener(scratch)
    try:
        assert listener.connect()
        assert listener.wait(0.2)  # listening, nothing new: returns after the timeout
        assert listener.notified == 0
        _queue_event(scratch, commit=False)  # rolled back: nobody is woken
        assert listener.wait(0.2)
        assert listener.notified == 0
        _queue_event(scratch, commit=True)
        assert listener.wait(30.0)  # returns as soon as the notification arrives
        assert listener.notified == 1
        with scratch.begin() as conn:  # COPY fires the trigger too (the batch path uses it)
            raw = conn.connection.driver_connection
            assert raw is not None
            with (
                raw.cursor() as cur,
                cur.copy("COPY outbox (event_id, topic, key, type, body) FROM STDIN") as cp,
            ):
                for _ in range(3):
                    cp.write_row((uuid.uuid4(), "t", "k", "status_updated", b"{}"))
        assert listener.wait(30.0)
        assert listener.notified == 2  # one per committed transaction
    finally:
        listener.close()
    migrate.downgrade(scratch, "0004")
    listener = OutboxListener(scratch)
    try:
        assert listener.connect()
        _queue_event(scratch, commit=True)
        assert listener.wait(0.2)
        assert listener.notified == 0  # the trigger is gone
    finally:
        listener.close()


def test_listener_survives_a_lost_connection(scratch: sa.Engine) -> None:
    from rebalancer.adapters.outbox_relay import OutboxListener

    migrate.upgrade(scratch, "0005")
    listener = OutboxListener(scratch, retry_s=0.0)
    try:
        assert listener.connect()
        pid = listener._conn.info.backend_pid
        with scratch.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
        assert not listener.wait(5.0)  # lost: the caller polls meanwhile
        assert listener.wait(0.1)  # listening again on a new connection
        assert listener._conn.info.backend_pid != pid
        _queue_event(scratch, commit=True)
        assert listener.wait(30.0)
        assert listener.notified == 1
    finally:
        listener.close()
