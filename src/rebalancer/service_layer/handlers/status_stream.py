"""Status changes of a tenant as a resumable feed (the source of ``GET /v1/stream``).

The feed reads the ``status_updated`` rows of the outbox table, i.e. the very events written
in the same transaction as each state change; nothing lives only in a process's memory, so
any number of API processes serve the same feed. A cursor is ``"<txid>-<id>"`` (see
:func:`~rebalancer.adapters.repositories.execution.status_feed` for why this order never
skips a late commit).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rebalancer.adapters.repositories.execution import status_feed, status_feed_head
from rebalancer.domain.errors import InvalidInput
from rebalancer.service_layer.unit_of_work import UnitOfWork

Cursor = tuple[int, int]


def parse_cursor(text: str) -> Cursor:
    """``"<txid>-<id>"`` -> ``(txid, id)``.

    Raises
    ------
    InvalidInput
        Not two integers separated by ``-``.
    """
    try:
        txid, oid = text.split("-", 1)
        return int(txid), int(oid)
    except ValueError as exc:
        raise InvalidInput(
            f"cursor {text!r} is not '<txid>-<id>' (use the id of the last event received)",
            ["Last-Event-ID"],
        ) from exc


def format_cursor(cursor: Cursor) -> str:
    """``(txid, id)`` -> ``"<txid>-<id>"``."""
    return f"{cursor[0]}-{cursor[1]}"


@dataclass(frozen=True)
class StatusFilter:
    """Which status changes a reader wants (``None``: any)."""

    account_id: str | None = None
    entity: str | None = None
    entity_id: str | None = None
    correlation_id: str | None = None

    def matches(self, event: dict[str, Any]) -> bool:
        p = event["payload"]
        return (
            (self.account_id is None or p.get("account_id") == self.account_id)
            and (self.entity is None or p.get("entity") == self.entity)
            and (self.entity_id is None or p.get("entity_id") == self.entity_id)
            and (self.correlation_id is None or event.get("correlation_id") == self.correlation_id)
        )


def head(uow: UnitOfWork) -> Cursor:
    """The cursor of "now" (a reader starting here gets only later changes)."""
    return status_feed_head(uow.conn)


def read_status_changes(
    uow: UnitOfWork, cursor: Cursor, flt: StatusFilter, limit: int = 200
) -> tuple[list[dict[str, Any]], Cursor]:
    """Status changes after ``cursor`` matching ``flt``, and the cursor to resume from.

    Each change is ``{"id": cursor, "event_id", "occurred_at", "correlation_id", "entity",
    "entity_id", "account_id", "status", "previous", "detail"}``. The returned cursor moves
    past filtered-out rows too.
    """
    out = []
    for row in status_feed(uow.conn, uow.tenant_id, cursor, limit):
        cursor = (int(row.txid), int(row.id))
        env = json.loads(bytes(row.body))
        if not flt.matches(env):
            continue
        out.append(
            {
                "id": format_cursor(cursor),
                "event_id": env["event_id"],
                "occurred_at": env["occurred_at"],
                "correlation_id": env.get("correlation_id"),
                **{
                    k: env["payload"].get(k)
                    for k in ("entity", "entity_id", "account_id", "status", "previous", "detail")
                },
            }
        )
    return out, cursor
