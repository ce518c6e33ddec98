"""Households: targets, transfer links and member accounts (tenant-scoped)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from rebalancer.adapters import orm
from rebalancer.domain.errors import NotFound


@dataclass(frozen=True, slots=True)
class HouseholdRecord:
    """A stored household.

    Attributes
    ----------
    targets
        Household targets (instrument or ``CASH`` -> fraction of household NAV), or None.
    links
        Transfer links ``{"from_account", "to_account", "max_amount"}`` (currency or None).
    """

    id: str
    name: str
    targets: dict[str, float] | None
    links: list[dict[str, Any]] = field(default_factory=list)


class HouseholdRepository:
    """Loads and stores households of one tenant."""

    def __init__(self, conn: sa.Connection, tenant_id: str) -> None:
        self.conn = conn
        self.tenant_id = tenant_id

    def get(self, household_id: str, *, lock: bool = False) -> HouseholdRecord:
        h = orm.households
        q = sa.select(h).where(h.c.id == household_id, h.c.tenant_id == self.tenant_id)
        row = self.conn.execute(q.with_for_update() if lock else q).first()
        if row is None:
            raise NotFound(f"household {household_id!r} does not exist", ["household_id"])
        return HouseholdRecord(row.id, row.name, row.targets, list(row.links or []))

    def account_ids(self, household_id: str) -> list[str]:
        a = orm.accounts
        return list(
            self.conn.execute(
                sa.select(a.c.id)
                .where(a.c.household_id == household_id, a.c.tenant_id == self.tenant_id)
                .order_by(a.c.id)
            ).scalars()
        )

    def upsert(
        self,
        household_id: str,
        name: str,
        targets: Mapping[str, float] | None,
        links: Sequence[Mapping[str, Any]],
    ) -> HouseholdRecord:
        """Create or replace the household's name, targets and links.

        Raises
        ------
        NotFound
            The id belongs to another tenant (it is not visible to this one).
        """
        h = orm.households
        values = {
            "name": name,
            "targets": dict(targets) if targets is not None else None,
            "links": [dict(lk) for lk in links],
        }
        row = self.conn.execute(
            insert(h)
            .values(id=household_id, tenant_id=self.tenant_id, **values)
            .on_conflict_do_update(
                index_elements=["id"], set_=values, where=h.c.tenant_id == self.tenant_id
            )
            .returning(h.c.id)
        ).first()
        if row is None:
            raise NotFound(f"household {household_id!r} does not exist", ["household_id"])
        return self.get(household_id)
