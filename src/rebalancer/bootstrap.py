"""Wiring: settings -> infrastructure (embedded or external) -> engine, Pulsar, optimizer.

Everything that needs a database, a broker or the optimizer gets them from a :class:`Runtime`,
built once per process by :func:`bootstrap`. Embedded servers are started only when their URL is
not configured, and stopped by :meth:`Runtime.close` (also on SIGTERM and at interpreter exit).
"""

from __future__ import annotations

import atexit
import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import pulsar
import sqlalchemy as sa
import structlog

from rebalancer.adapters import migrate
from rebalancer.adapters.db import make_engine
from rebalancer.adapters.embedded import EmbeddedPostgres, EmbeddedPulsar
from rebalancer.adapters.pulsar_bus import Publisher, make_client
from rebalancer.config import Settings, get_settings
from rebalancer.log_config import configure_logging

log = structlog.get_logger(__name__)


@dataclass
class Infrastructure:
    """Database and broker URLs, plus the embedded servers this process started."""

    database_url: str
    pulsar_url: str
    postgres: EmbeddedPostgres | None = None
    broker: EmbeddedPulsar | None = None

    def stop(self) -> None:
        """Stop the embedded servers this process owns (broker first, then the database)."""
        if self.broker is not None:
            self.broker.stop()
        if self.postgres is not None:
            self.postgres.stop()


def start_infrastructure(settings: Settings) -> Infrastructure:
    """Use the configured URLs, starting embedded servers for the ones that are missing."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    pg = broker = None
    db_url = settings.database_url
    if db_url is None:
        pg = EmbeddedPostgres(settings.data_dir)
        db_url = pg.start()
    try:
        pulsar_url = settings.pulsar_url
        if pulsar_url is None:
            broker = EmbeddedPulsar(settings.data_dir)
            pulsar_url = broker.start()
    except BaseException:
        if pg is not None:
            pg.stop()
        raise
    return Infrastructure(db_url, pulsar_url, pg, broker)


@dataclass
class Runtime:
    """Per-process wiring of the service."""

    settings: Settings
    infra: Infrastructure
    engine: sa.Engine
    client: pulsar.Client
    publisher: Publisher
    stop_event: threading.Event = field(default_factory=threading.Event)
    _local: threading.local = field(default_factory=threading.local)
    _closed: bool = False

    @property
    def optimizer(self) -> Any:
        """This thread's recommendation engine (compiled problems are cached inside it).

        Compiled CVXPY problems hold solver state that must not be shared between threads, so
        each consumer thread gets its own engine and reuses it across accounts.
        """
        engine = getattr(self._local, "optimizer", None)
        if engine is None:
            from rebalancer.optimizer import Recommender

            engine = self._local.optimizer = Recommender()
        return engine

    def close(self) -> None:
        """Stop background work, close clients and stop owned embedded servers (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.stop_event.set()
        with contextlib.suppress(Exception):
            self.publisher.close()
        with contextlib.suppress(Exception):
            self.client.close()
        self.engine.dispose()
        self.infra.stop()
        log.info("runtime.closed")


def bootstrap(settings: Settings | None = None, *, upgrade_schema: bool = True) -> Runtime:
    """Build the process runtime: infrastructure, schema, engine and Pulsar client."""
    s = settings or get_settings()
    configure_logging(s.log_level, s.log_json)
    infra = start_infrastructure(s)
    try:
        engine = make_engine(infra.database_url, s)
        if upgrade_schema:
            migrate.upgrade(engine)
        client = make_client(infra.pulsar_url)
    except BaseException:
        infra.stop()
        raise
    rt = Runtime(s, infra, engine, client, Publisher(client))
    atexit.register(rt.close)
    return rt


def install_signal_handlers(rt: Runtime) -> None:
    """SIGTERM/SIGINT set the stop event; the main loop finishes in-flight work and exits."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("runtime.signal", signal=signal.Signals(signum).name)
        if rt.stop_event.is_set():
            raise KeyboardInterrupt
        rt.stop_event.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@contextlib.contextmanager
def running(settings: Settings | None = None) -> Iterator[Runtime]:
    """``with running() as rt:`` bootstraps and always closes."""
    rt = bootstrap(settings)
    try:
        yield rt
    finally:
        rt.close()
