"""``rebalancer apikey create|list|revoke``: the key works at once, is stored only hashed, its
creation and revocation are audited, and a revoked key is refused."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration

SRC = Path(__file__).resolve().parents[3] / "src"


def test_apikey_cli_lifecycle(settings: Any, client: TestClient, engine: sa.Engine) -> None:
    tenant = f"tenant-cli-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "REBALANCER_DATABASE_URL": settings.database_url,
        "REBALANCER_PULSAR_URL": settings.pulsar_url,
        "PYTHONPATH": str(SRC),
        "REBALANCER_LOG_LEVEL": "WARNING",
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "rebalancer.entrypoints.cli", "apikey", *args],
            env=env, capture_output=True, text=True, timeout=300, check=True,
        )  # fmt: skip

    created = cli("create", "--tenant", tenant, "--scope", "read", "--name", "ops")
    key = created.stdout.strip()
    key_id = created.stderr.split("id: ")[1].split()[0]
    assert key.startswith("rbk_")
    assert client.get("/v1/instruments", headers={"X-API-Key": key}).status_code == 200
    denied = client.post("/v1/models", json={}, headers={"X-API-Key": key})
    assert denied.status_code == 403  # read scope only

    listed = cli("list", "--tenant", tenant).stdout
    assert key_id in listed and "ops" in listed and key not in listed
    with engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT key_hash FROM api_keys WHERE id = :i"), {"i": key_id}
        ).scalar_one()
    assert stored != key and len(stored) == 64  # a SHA-256 hex digest, never the key

    assert f"revoked {key_id}" in cli("revoke", key_id).stdout
    assert client.get("/v1/instruments", headers={"X-API-Key": key}).status_code == 401
    with engine.connect() as conn:
        actions = (
            conn.execute(
                sa.text(
                    "SELECT action FROM audit_log WHERE tenant_id = :t AND entity = 'api_key' "
                    "AND entity_id = :i ORDER BY id"
                ),
                {"t": tenant, "i": key_id},
            )
            .scalars()
            .all()
        )
    assert actions == ["create", "revoke"]
