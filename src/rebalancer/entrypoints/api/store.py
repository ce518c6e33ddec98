"""The few table accesses the API layer needs that no repository offers yet.

- API keys stored hashed in ``api_keys`` (lookup and issuing).
- Households: an account may name one, which must exist for the tenant (created on first use).

These belong in ``adapters/repositories`` and can move there unchanged.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from rebalancer.adapters import orm
from rebalancer.config import Scope
from rebalancer.domain.errors import NotFound


def hash_api_key(key: str) -> str:
    """Hex SHA-256 of an API key (the only form in which keys are stored or compared)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StoredApiKey:
    """An API key row (never the key itself)."""

    id: uuid.UUID
    tenant_id: str
    name: str
    key_hash: str
    scopes: frozenset[Scope]


def _scopes(values: Iterable[str]) -> frozenset[Scope]:
    known = {s.value for s in Scope}
    return frozenset(Scope(v) for v in values if v in known)


def find_api_key(conn: sa.Connection, key_hash: str) -> StoredApiKey | None:
    """The unrevoked key with this hash, if any."""
    t = orm.api_keys
    row = conn.execute(
        sa.select(t).where(t.c.key_hash == key_hash, t.c.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    return StoredApiKey(row.id, row.tenant_id, row.name, row.key_hash, _scopes(row.scopes))


def issue_api_key(
    engine: sa.Engine, tenant_id: str, scopes: Iterable[Scope], name: str = "api"
) -> str:
    """Create a random API key for ``tenant_id``; store only its hash; return the key once."""
    key = "rbk_" + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(
            insert(orm.tenants).values(id=tenant_id, name=tenant_id).on_conflict_do_nothing()
        )
        conn.execute(
            sa.insert(orm.api_keys).values(
                id=uuid.uuid4(),
                tenant_id=tenant_id,
                name=name,
                key_hash=hash_api_key(key),
                scopes=sorted(str(s) for s in scopes),
            )
        )
    return key


def revoke_api_key(engine: sa.Engine, key: str) -> bool:
    """Revoke a key; False when no active key matched."""
    t = orm.api_keys
    with engine.begin() as conn:
        res = conn.execute(
            sa.update(t)
            .where(t.c.key_hash == hash_api_key(key), t.c.revoked_at.is_(None))
            .values(revoked_at=sa.func.now())
        )
    return bool(res.rowcount)


def ensure_household(conn: sa.Connection, tenant_id: str, household_id: str) -> None:
    """Create the tenant's household if missing.

    Raises
    ------
    NotFound
        The id belongs to another tenant's household.
    """
    t = orm.households
    conn.execute(
        insert(t)
        .values(id=household_id, tenant_id=tenant_id, name=household_id)
        .on_conflict_do_nothing()
    )
    owner = conn.execute(sa.select(t.c.tenant_id).where(t.c.id == household_id)).scalar()
    if owner != tenant_id:
        raise NotFound(f"household {household_id!r} does not exist", ["household_id"])
