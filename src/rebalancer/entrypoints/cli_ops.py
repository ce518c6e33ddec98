"""Operator commands: ``rebalancer apikey create|list|revoke`` and ``rebalancer dlq list|replay``.

API keys are stored as SHA-256 hashes only; ``create`` prints the key once and it cannot be
shown again. Creating and revoking keys are admin actions written to the tenant's audit log
(actor ``cli:<login name>``).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import uuid
from collections.abc import Iterator

import pulsar
import sqlalchemy as sa
import typer

from rebalancer.adapters.pulsar_bus import Publisher
from rebalancer.config import Scope, Settings, get_settings

apikey_app = typer.Typer(help="API keys stored hashed in the database.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead-letter topics (<topic>-DLQ).", no_args_is_help=True)

_UNUSED_PULSAR = "pulsar://unused:1"
_UNUSED_DB = "postgresql+psycopg://unused@/unused"


def _actor() -> str:
    with contextlib.suppress(Exception):
        return f"cli:{getpass.getuser()}"
    return "cli"


@contextlib.contextmanager
def _engine(settings: Settings) -> Iterator[sa.Engine]:
    """The database of ``settings`` (embedded when no URL is set), without any broker."""
    from rebalancer.adapters.db import make_engine
    from rebalancer.bootstrap import start_infrastructure

    s = settings.model_copy(update={"pulsar_url": settings.pulsar_url or _UNUSED_PULSAR})
    infra = start_infrastructure(s)
    engine = make_engine(infra.database_url, s)
    try:
        yield engine
    finally:
        engine.dispose()
        infra.stop()


@apikey_app.command("create")
def apikey_create(
    tenant: str = typer.Option(..., help="Tenant the key acts for."),
    scope: list[Scope] = typer.Option(
        [Scope.READ], "--scope", help="Scope (repeat for several): read, trade, approve, admin."
    ),
    name: str = typer.Option("cli", help="A label to recognise the key by."),
) -> None:
    """Create a key; prints it once (only its hash is stored)."""
    from rebalancer.entrypoints.api.store import hash_api_key, issue_api_key
    from rebalancer.service_layer.unit_of_work import UnitOfWork

    with _engine(get_settings()) as engine:
        key = issue_api_key(engine, tenant, scope, name=name)
        with UnitOfWork(engine, tenant) as uow:
            row = uow.conn.execute(
                sa.text("SELECT id FROM api_keys WHERE key_hash = :h"), {"h": hash_api_key(key)}
            ).first()
            key_id = str(row[0]) if row else ""
            uow.audit.record(
                _actor(), "create", "api_key", key_id, {"name": name, "scopes": sorted(scope)}
            )
            uow.commit()
    typer.echo(f"id: {key_id}", err=True)
    typer.echo(key)


@apikey_app.command("list")
def apikey_list(tenant: str = typer.Option(..., help="Tenant whose keys are listed.")) -> None:
    """Keys of a tenant: id, name, scopes, created, revoked (never the key)."""
    from rebalancer.adapters import orm

    t = orm.api_keys
    with _engine(get_settings()) as engine, engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.id, t.c.name, t.c.scopes, t.c.created_at, t.c.revoked_at)
            .where(t.c.tenant_id == tenant)
            .order_by(t.c.created_at)
        ).all()
    for r in rows:
        revoked = r.revoked_at.isoformat() if r.revoked_at else "-"
        typer.echo(f"{r.id}  {r.name}  {','.join(r.scopes)}  {r.created_at.isoformat()}  {revoked}")


@apikey_app.command("revoke")
def apikey_revoke(
    key_id: str = typer.Argument(..., help="Id of the key (from `apikey list` or `create`)."),
) -> None:
    """Revoke a key by id; it stops working at once."""
    from rebalancer.adapters import orm
    from rebalancer.service_layer.unit_of_work import UnitOfWork

    try:
        kid = uuid.UUID(key_id)
    except ValueError:
        typer.echo(f"{key_id!r} is not a key id (a UUID from `rebalancer apikey list`)", err=True)
        raise typer.Exit(2) from None
    t = orm.api_keys
    with _engine(get_settings()) as engine:
        with engine.connect() as conn:
            tenant = conn.execute(sa.select(t.c.tenant_id).where(t.c.id == kid)).scalar()
        if tenant is None:
            typer.echo(f"no API key {key_id}", err=True)
            raise typer.Exit(1)
        with UnitOfWork(engine, tenant) as uow:
            n = uow.conn.execute(
                sa.update(t)
                .where(t.c.id == kid, t.c.revoked_at.is_(None))
                .values(revoked_at=sa.func.now())
            ).rowcount
            if n:
                uow.audit.record(_actor(), "revoke", "api_key", key_id, {})
            uow.commit()
    typer.echo(f"revoked {key_id}" if n else f"{key_id} was already revoked")


@contextlib.contextmanager
def _broker(settings: Settings) -> Iterator[tuple[pulsar.Client, Publisher]]:
    from rebalancer.adapters.pulsar_bus import make_client
    from rebalancer.bootstrap import start_infrastructure

    s = settings.model_copy(update={"database_url": settings.database_url or _UNUSED_DB})
    infra = start_infrastructure(s)
    client = make_client(infra.pulsar_url)
    publisher = Publisher(client)
    try:
        yield client, publisher
    finally:
        publisher.close()
        client.close()
        infra.stop()


@dlq_app.command("list")
def dlq_list(
    topic: list[str] = typer.Option(
        [], "--topic", help="Original topic (repeatable); default: every topic."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """Pending dead letters: topic, event id, type, tenant, reason."""
    from rebalancer.entrypoints.dlq import list_dead_letters

    with _broker(get_settings()) as (client, _):
        letters = list_dead_letters(client, topic or None)
    for d in letters:
        if as_json:
            typer.echo(json.dumps({**d.__dict__, "published_at": d.published_at.isoformat()}))
        else:
            typer.echo(
                f"{d.original_topic}  {d.event_id or '-'}  {d.type or '-'}  "
                f"{d.tenant_id or '-'}  {d.reason}"
            )
    typer.echo(f"{len(letters)} dead letters", err=True)


@dlq_app.command("replay")
def dlq_replay(
    event_id: list[str] = typer.Option(
        [], "--event-id", help="Replay only this event (repeatable); default: all."
    ),
    topic: list[str] = typer.Option(
        [], "--topic", help="Original topic (repeatable); default: every topic."
    ),
) -> None:
    """Republish dead letters to their original topic (after fixing what refused them)."""
    from rebalancer.entrypoints.dlq import replay

    with _broker(get_settings()) as (client, publisher):
        done = replay(client, publisher, topic or None, event_ids=event_id or None)
    for d in done:
        typer.echo(f"replayed {d.event_id or d.message_id} to {d.original_topic}")
    typer.echo(f"{len(done)} dead letters replayed", err=True)
