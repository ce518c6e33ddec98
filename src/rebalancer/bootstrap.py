"""Wiring: settings -> infrastructure (embedded or external) -> engine, Pulsar, optimizer.

Everything that needs a database, a broker or the optimizer gets them from a :class:`Runtime`,
built once per process by :func:`bootstrap`. Embedded servers are started only when their URL is
not configured, and stopped by :meth:`Runtime.close` (also on SIGTERM and at interpreter exit).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import pulsar
import sqlalchemy as sa
import structlog

from rebalancer.adapters import migrate
from rebalancer.adapters.db import make_engine
from rebalancer.adapters.embedded import EmbeddedPostgres, EmbeddedPulsar
from rebalancer.adapters.pulsar_bus import Publisher, make_client
from rebalancer.config import Settings, SolverChain, get_settings
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


def jax_cache_dir(settings: Settings) -> Path | None:
    """The fast path's persistent compilation cache: ``$REBALANCER_JAX_CACHE_DIR`` (``off``:
    none), else ``{data_dir}/jax-cache``."""
    if os.environ.get("REBALANCER_JAX_CACHE_DIR") is not None:
        from rebalancer.optimizer.fast.solver import default_cache_dir

        return default_cache_dir()
    return settings.data_dir / "jax-cache"


def make_recommender(settings: Settings, fast: Any = None) -> Any:
    """A recommendation engine with the service's chain (``settings.solver_chain``).

    With the fast chain it uses ``fast`` (a :class:`~rebalancer.optimizer.fast.FastSolver`)
    and never waits for a compile: a size bucket not compiled yet is answered by Clarabel at
    once, with the reason in ``solver.fallbacks``, and compiled in the background.
    """
    from rebalancer.optimizer import DEFAULT_CHAIN, FAST_CHAIN, Recommender

    if settings.solver_chain == SolverChain.FAST and fast is not None:
        return Recommender(solvers=FAST_CHAIN, fast=fast, wait_for_compile=False)
    return Recommender(solvers=DEFAULT_CHAIN)


@dataclass
class Runtime:
    """Per-process wiring of the service."""

    settings: Settings
    infra: Infrastructure
    engine: sa.Engine
    client: pulsar.Client
    publisher: Publisher
    stop_event: threading.Event = field(default_factory=threading.Event)
    fast: Any = None
    """The fast path's solver of this process's recommenders (with the fast chain; the
    process-wide shared one is taken on first use when unset)."""
    warmup: Any = None
    """The :class:`~rebalancer.optimizer.warmup.Warmup` started by :meth:`start_warmup`."""
    _local: threading.local = field(default_factory=threading.local)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _warm_started: bool = False
    _closed: bool = False

    @property
    def fast_solver(self) -> Any:
        """The fast solver of this process (``None`` with the Clarabel chain: no JAX)."""
        if self.settings.solver_chain != SolverChain.FAST:
            return None
        with self._lock:
            if self.fast is None:
                from rebalancer.optimizer.fast.solver import shared_fast_solver

                self.fast = shared_fast_solver(jax_cache_dir(self.settings))
            return self.fast

    @property
    def optimizer(self) -> Any:
        """This thread's recommendation engine (compiled problems are cached inside it).

        Compiled CVXPY problems hold solver state that must not be shared between threads, so
        each consumer thread gets its own engine and reuses it across accounts; the fast
        path's compiled buckets are shared by all of them (:attr:`fast_solver`). See
        :func:`make_recommender`.
        """
        engine = getattr(self._local, "optimizer", None)
        if engine is None:
            engine = self._local.optimizer = make_recommender(self.settings, self.fast_solver)
        return engine

    def start_warmup(self) -> Any:
        """Start the fast path's warm-up once per runtime (API lifespan, worker start) and
        return at once: ``settings.warm_buckets`` and up to ``settings.warm_recent`` buckets
        earlier runs' requests needed compile on a background thread; then the garbage
        collector's long-lived objects are frozen. With the Clarabel chain (or nothing to
        warm) they are frozen now. Returns the :class:`~rebalancer.optimizer.warmup.Warmup`
        (``None`` with the Clarabel chain)."""
        with self._lock:
            if self._warm_started:
                return self.warmup
            self._warm_started = True
        fast = self.fast_solver
        if fast is None:  # the same as warmup.freeze_long_lived, without importing JAX
            gc.collect()
            gc.freeze()
            return None
        from rebalancer.optimizer.warmup import Warmup, parse_buckets

        s = self.settings
        self.warmup = Warmup(fast, parse_buckets(s.warm_buckets), recent=s.warm_recent)
        self.warmup.start()
        return self.warmup

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
