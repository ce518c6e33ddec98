"""Outbox, processed-event ids, idempotency keys and the audit log."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from rebalancer.adapters import orm
from rebalancer.contracts import TOPICS, Envelope, encode

_ADD_OUTBOX = insert(orm.outbox).on_conflict_do_nothing(index_elements=["event_id"])
"""Built once: every handler writes events (a statement built per call costs about as much
client CPU as its round trip)."""


class OutboxRepository:
    """Writes events in the caller's transaction; the relay publishes them later."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    def add(self, envelope: Envelope, topic: str | None = None) -> None:
        """Queue ``envelope`` for publishing on its type's topic (or ``topic``)."""
        self.add_many([envelope], topic)

    def add_many(self, envelopes: Sequence[Envelope], topic: str | None = None) -> None:
        """Queue ``envelopes`` (in order) with one statement; each on its type's topic (or
        ``topic``). An event id already queued is skipped."""
        if not envelopes:
            return
        rows = [
            {
                "event_id": e.event_id,
                "topic": topic or TOPICS[e.type],
                "key": e.key,
                "type": str(e.type),
                "body": encode(e),
            }
            for e in envelopes
        ]
        self.conn.execute(_ADD_OUTBOX, rows)

    def pending_count(self) -> int:
        """Events not yet published."""
        return int(
            self.conn.execute(
                sa.select(sa.func.count()).where(orm.outbox.c.published_at.is_(None))
            ).scalar_one()
        )


class ProcessedEvents:
    """Consumer-side idempotency: remember each event id once per consumer."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    def first_time(self, consumer: str, event_id: uuid.UUID) -> bool:
        """Record ``event_id`` for ``consumer``; False when it was already processed."""
        row = self.conn.execute(
            insert(orm.processed_events)
            .values(consumer=consumer, event_id=event_id)
            .on_conflict_do_nothing()
            .returning(orm.processed_events.c.event_id)
        ).first()
        return row is not None


@dataclass(frozen=True)
class StoredResponse:
    """A response remembered under an ``Idempotency-Key``."""

    status_code: int
    body: Any
    request_hash: str


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    """SHA-256 of the request line and body, to detect a key reused for another request."""
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


class IdempotencyStore:
    """``Idempotency-Key`` records, scoped by tenant."""

    def __init__(self, conn: sa.Connection, tenant_id: str) -> None:
        self.conn = conn
        self.tenant_id = tenant_id

    def get(self, key: str) -> StoredResponse | None:
        row = self.conn.execute(
            sa.select(orm.idempotency_keys).where(
                orm.idempotency_keys.c.tenant_id == self.tenant_id,
                orm.idempotency_keys.c.key == key,
            )
        ).first()
        if row is None or row.status_code is None:
            return None
        return StoredResponse(row.status_code, row.response, row.request_hash)

    def lock(self, key: str) -> None:
        """Serialize concurrent requests with the same key (transaction-scoped advisory lock)."""
        digest = hashlib.sha256(f"{self.tenant_id}\0{key}".encode()).digest()
        self.conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:k)"),
            {"k": int.from_bytes(digest[:8], "big", signed=True)},
        )

    def save(
        self, key: str, method: str, path: str, request_hash: str, status_code: int, body: Any
    ) -> None:
        self.conn.execute(
            insert(orm.idempotency_keys)
            .values(
                tenant_id=self.tenant_id,
                key=key,
                method=method,
                path=path,
                request_hash=request_hash,
                status_code=status_code,
                response=json.loads(json.dumps(body, default=str)),
            )
            .on_conflict_do_nothing()
        )


class AuditLog:
    """Who did what, when (approvals and admin actions)."""

    def __init__(self, conn: sa.Connection, tenant_id: str) -> None:
        self.conn = conn
        self.tenant_id = tenant_id

    def record(
        self,
        actor: str,
        action: str,
        entity: str,
        entity_id: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        self.conn.execute(
            sa.insert(orm.audit_log).values(
                tenant_id=self.tenant_id,
                actor=actor,
                action=action,
                entity=entity,
                entity_id=entity_id,
                detail=json.loads(json.dumps(detail or {}, default=str)),
            )
        )
