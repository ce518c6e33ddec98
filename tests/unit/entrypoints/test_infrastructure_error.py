"""Which handler errors the consumer loop retries (the database or broker is down) instead of
dead-lettering the event after its attempts (entrypoints/consumers.infrastructure_error)."""

from __future__ import annotations

import sqlalchemy as sa

from rebalancer.domain.errors import InvalidInput
from rebalancer.entrypoints.consumers import infrastructure_error


class _Orig(Exception):
    sqlstate: str | None = None


def _operational() -> sa.exc.OperationalError:
    return sa.exc.OperationalError("SELECT 1", {}, _Orig("server closed the connection"))


def test_lost_connections_are_infrastructure() -> None:
    assert infrastructure_error(_operational())
    assert infrastructure_error(sa.exc.PendingRollbackError("Can't reconnect until rolled back"))
    assert infrastructure_error(sa.exc.DisconnectionError("pre-ping failed"))
    assert infrastructure_error(ConnectionRefusedError("no server"))


def test_an_error_raised_while_handling_a_lost_connection_is_infrastructure() -> None:
    try:
        try:
            raise _operational()
        except sa.exc.OperationalError as lost:
            raise RuntimeError("cleanup failed") from lost
    except RuntimeError as exc:
        assert infrastructure_error(exc)
    try:
        try:
            raise _operational()
        except sa.exc.OperationalError:
            raise KeyError("during rollback") from None  # context kept, cause suppressed
    except KeyError as exc:
        assert exc.__context__ is not None
        assert infrastructure_error(exc)


def test_bad_events_and_business_refusals_are_not() -> None:
    assert not infrastructure_error(ValueError("bad payload"))
    assert not infrastructure_error(
        sa.exc.IntegrityError("INSERT", {}, _Orig("duplicate key value"))
    )
    try:
        try:
            raise _operational()
        except sa.exc.OperationalError:
            raise InvalidInput("the account has no model", ["account_id"]) from None
    except InvalidInput as exc:
        assert not infrastructure_error(exc)  # a refusal stays a refusal


def test_a_cyclic_chain_ends() -> None:
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a
    assert not infrastructure_error(a)
