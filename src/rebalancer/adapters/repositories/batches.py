"""Batch rebalances: the ``batches`` table and set-based reads and writes of their rebalances."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from rebalancer.adapters import orm
from rebalancer.adapters.repositories.bulk import copy_rows
from rebalancer.domain.errors import NotFound
from rebalancer.domain.rebalance import OPEN_STATUSES, RebalanceStatus

_LOCK_FOR_CANCEL = sa.text(
    """
    SELECT r.id, a.id AS account_id, r.status
      FROM rebalances r JOIN accounts a ON a.id = r.account_id
     WHERE r.batch_id = :b AND r.tenant_id = :t AND a.tenant_id = :t
       AND r.status = 'requested'
     ORDER BY a.id, r.id
       FOR UPDATE OF a, r
    """
)


_NEXT_PENDING = sa.text(
    """
    SELECT rec.id
      FROM recommendations rec JOIN rebalances r ON r.id = rec.rebalance_id
     WHERE r.batch_id = :b AND r.tenant_id = :t AND rec.tenant_id = :t
       AND rec.status = 'pending_approval'
     ORDER BY rec.id
     LIMIT :n
       FOR UPDATE OF rec SKIP LOCKED
    """
)
_COUNT_PENDING = sa.text(
    """
    SELECT count(*)
      FROM recommendations rec JOIN rebalances r ON r.id = rec.rebalance_id
     WHERE r.batch_id = :b AND r.tenant_id = :t AND rec.status = 'pending_approval'
    """
)


class BatchRepository:
    """Tenant-scoped access to batches and their rebalances."""

    def __init__(self, conn: sa.Connection, tenant_id: str) -> None:
        self.conn = conn
        self.tenant_id = tenant_id

    def lock_followers(self, model_id: str) -> list[str]:
        """Ids of the tenant's accounts with a sleeve on ``model_id``, locked, in id order.

        The row locks serialize the batch with triggers of the same accounts (which lock the
        account first too), so no account gets two open rebalances.
        """
        a = orm.accounts
        followers = sa.select(orm.sleeves.c.account_id).where(orm.sleeves.c.model_id == model_id)
        q = (
            sa.select(a.c.id)
            .where(a.c.tenant_id == self.tenant_id, a.c.id.in_(followers))
            .order_by(a.c.id)
            .with_for_update()
        )
        return list(self.conn.execute(q).scalars())

    def lock_accounts(self, account_ids: Sequence[str]) -> None:
        """Row-lock accounts in id order (the order every writer uses, so no deadlock)."""
        a = orm.accounts
        self.conn.execute(
            sa.select(a.c.id)
            .where(a.c.tenant_id == self.tenant_id, a.c.id.in_(sorted(set(account_ids))))
            .order_by(a.c.id)
            .with_for_update()
        ).all()

    def open_rebalances_of_followers(self, model_id: str) -> dict[str, Any]:
        """Account id -> its open rebalance, for accounts following ``model_id``."""
        r = orm.rebalances
        followers = sa.select(orm.sleeves.c.account_id).where(orm.sleeves.c.model_id == model_id)
        rows = self.conn.execute(
            sa.select(r.c.id, r.c.account_id, r.c.status, r.c.reasons, r.c.batch_id)
            .where(
                r.c.tenant_id == self.tenant_id,
                r.c.account_id.in_(followers),
                r.c.status.in_(OPEN_STATUSES),
            )
            .order_by(r.c.created_at)
        ).all()
        return {row.account_id: row for row in rows}

    def create(
        self,
        batch_id: uuid.UUID,
        model_id: str,
        model_version: int,
        reasons: Sequence[str],
        created_by: str,
    ) -> None:
        self.conn.execute(
            sa.insert(orm.batches).values(
                id=batch_id,
                tenant_id=self.tenant_id,
                model_id=model_id,
                model_version=model_version,
                status="running",
                reasons=list(reasons),
                created_by=created_by,
            )
        )

    def set_counts(self, batch_id: uuid.UUID, total: int, queued: int, skipped: int) -> None:
        values: dict[str, Any] = {"total": total, "queued": queued, "skipped": skipped}
        if queued == 0:
            values.update(status="finished", finished_at=sa.func.now())
        self.conn.execute(sa.update(orm.batches).where(orm.batches.c.id == batch_id).values(values))

    def insert_rebalances(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert new rebalances (``id, account_id, status, reasons, priority, batch_id``) with
        one ``COPY``; the other columns take their defaults."""
        if rows:
            copy_rows(
                self.conn,
                orm.rebalances,
                ("id", "tenant_id", "account_id", "status", "reasons", "priority", "batch_id"),
                (
                    (
                        r["id"],
                        self.tenant_id,
                        r["account_id"],
                        r["status"],
                        json.dumps(list(r["reasons"])),
                        r["priority"],
                        r["batch_id"],
                    )
                    for r in rows
                ),
            )

    def _update(self, rebalance_ids: Sequence[uuid.UUID], **values: Any) -> None:
        """Set ``values`` (and ``updated_at``) on the tenant's given rebalances."""
        if not rebalance_ids:
            return
        r = orm.rebalances
        self.conn.execute(
            sa.update(r)
            .where(r.c.id.in_(list(rebalance_ids)), r.c.tenant_id == self.tenant_id)
            .values(**values, updated_at=sa.func.now())
        )

    def attach(self, rebalance_ids: Sequence[uuid.UUID], batch_id: uuid.UUID, reason: str) -> None:
        """Make requested rebalances part of the batch (adding ``reason`` to their reasons)."""
        reasons = orm.rebalances.c.reasons
        self._update(
            rebalance_ids,
            batch_id=batch_id,
            reasons=reasons.op("||")(sa.cast([reason], reasons.type)),
        )

    def reject_pending(self, rebalance_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
        """Reject the recommendations of the given rebalances still ``pending_approval`` and
        finish those rebalances as ``rejected`` (three statements, whatever their number);
        returns the rebalances rejected.

        The recommendations are locked first with ``SKIP LOCKED``: one an approval holds
        right now is left alone (it is about to trade), so this never waits for an approval,
        which locks a recommendation before its account (a fan-out holds the accounts)."""
        if not rebalance_ids:
            return []
        r, rec = orm.rebalances, orm.recommendations
        pending = str(RebalanceStatus.PENDING_APPROVAL)
        rejected = str(RebalanceStatus.REJECTED)
        free = list(
            self.conn.execute(
                sa.select(rec.c.rebalance_id)
                .where(
                    rec.c.rebalance_id.in_(list(rebalance_ids)),
                    rec.c.tenant_id == self.tenant_id,
                    rec.c.status == pending,
                )
                .order_by(rec.c.id)
                .with_for_update(skip_locked=True)
            ).scalars()
        )
        if not free:
            return []
        out = list(
            self.conn.execute(
                sa.update(r)
                .where(r.c.id.in_(free), r.c.tenant_id == self.tenant_id, r.c.status == pending)
                .values(status=rejected, updated_at=sa.func.now())
                .returning(r.c.id)
            ).scalars()
        )
        if out:
            self.conn.execute(
                sa.update(rec)
                .where(
                    rec.c.rebalance_id.in_(out),
                    rec.c.tenant_id == self.tenant_id,
                    rec.c.status == pending,
                )
                .values(status=rejected)
            )
        return out

    def pending_of(self, batch_id: uuid.UUID) -> list[Any]:
        """The batch's rebalances awaiting approval: ``(id, account_id)`` rows (no locks)."""
        r = orm.rebalances
        return list(
            self.conn.execute(
                sa.select(r.c.id, r.c.account_id).where(
                    r.c.batch_id == batch_id,
                    r.c.tenant_id == self.tenant_id,
                    r.c.status == str(RebalanceStatus.PENDING_APPROVAL),
                )
            ).all()
        )

    def lock_for_cancel(self, batch_id: uuid.UUID) -> list[Any]:
        """Lock the batch's rebalances still ``requested`` with their accounts, in account id
        order (the order of every handler and of the workers' chunks: a chunk computing one of
        them meanwhile is waited for, and its result is seen); returns ``(id, account_id,
        status)`` rows of those still ``requested`` then."""
        return list(self.conn.execute(_LOCK_FOR_CANCEL, {"b": batch_id, "t": self.tenant_id}))

    def cancel_requested(self, rebalance_ids: Sequence[uuid.UUID]) -> None:
        """Finish the given rebalances as ``cancelled`` (callers pass ``requested`` ones)."""
        self._update(rebalance_ids, status=str(RebalanceStatus.CANCELLED))

    def mark_cancelled(self, batch_id: uuid.UUID) -> bool:
        """A running batch becomes ``cancelled`` (finished now); returns whether it was running."""
        b = orm.batches
        done = self.conn.execute(
            sa.update(b)
            .where(b.c.id == batch_id, b.c.tenant_id == self.tenant_id, b.c.status == "running")
            .values(status="cancelled", finished_at=sa.func.now())
            .returning(b.c.id)
        ).first()
        return done is not None

    def next_pending(self, batch_id: uuid.UUID, n: int) -> list[uuid.UUID]:
        """Lock and return up to ``n`` of the batch's recommendations awaiting approval, in id
        order (the order approvals lock them in), skipping those another transaction holds:
        concurrent callers take different ones."""
        params = {"b": batch_id, "t": self.tenant_id, "n": n}
        return list(self.conn.execute(_NEXT_PENDING, params).scalars())

    def count_pending(self, batch_id: uuid.UUID) -> int:
        """The batch's recommendations awaiting approval."""
        params = {"b": batch_id, "t": self.tenant_id}
        return int(self.conn.execute(_COUNT_PENDING, params).scalar_one())

    def lock_requested(self, rebalance_ids: Sequence[uuid.UUID]) -> list[Any]:
        """Lock the given rebalances and return those still ``requested`` (not yet computed)."""
        r = orm.rebalances
        return list(
            self.conn.execute(
                sa.select(r.c.id, r.c.account_id, r.c.status, r.c.batch_id)
                .where(r.c.id.in_(list(rebalance_ids)), r.c.tenant_id == self.tenant_id)
                .order_by(r.c.id)
                .with_for_update()
            ).all()
        )

    def get(self, batch_id: uuid.UUID) -> Any:
        b = orm.batches
        row = self.conn.execute(
            sa.select(b).where(b.c.id == batch_id, b.c.tenant_id == self.tenant_id)
        ).first()
        if row is None:
            raise NotFound(f"batch {batch_id} does not exist", ["batch_id"])
        return row

    def status_counts(self, batch_id: uuid.UUID) -> dict[str, int]:
        """Rebalance status -> how many rebalances of the batch have it."""
        r = orm.rebalances
        rows = self.conn.execute(
            sa.select(r.c.status, sa.func.count())
            .where(r.c.batch_id == batch_id, r.c.tenant_id == self.tenant_id)
            .group_by(r.c.status)
        ).all()
        return {status: int(n) for status, n in rows}

    def finish_if_done(self, batch_ids: Sequence[uuid.UUID]) -> None:
        """Mark running batches finished once none of their rebalances is ``requested``."""
        if not batch_ids:
            return
        b, r = orm.batches, orm.rebalances
        # Lock first: a worker committing its last chunk concurrently is waited for, and the
        # next statement's snapshot then sees its rows (READ COMMITTED), so one of them wins.
        self.conn.execute(
            sa.select(b.c.id).where(b.c.id.in_(list(batch_ids))).order_by(b.c.id).with_for_update()
        ).all()
        pending = sa.exists().where(r.c.batch_id == b.c.id, r.c.status == "requested")
        self.conn.execute(
            sa.update(b)
            .where(b.c.id.in_(list(batch_ids)), b.c.status == "running", ~pending)
            .values(status="finished", finished_at=sa.func.now())
        )
