"""Run the FastAPI app with uvicorn in a background thread (demo, tests)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from rebalancer.bootstrap import Runtime


def free_port(host: str, preferred: int) -> int:
    """``preferred`` if it is free on ``host``, else an OS-picked free port."""
    with socket.socket() as s:
        try:
            s.bind((host, preferred))
            return preferred
        except OSError:
            pass
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ApiServer:
    """uvicorn serving ``create_app(rt)`` on a thread; :meth:`stop` shuts it down gracefully."""

    def __init__(self, rt: Runtime, host: str | None = None, port: int | None = None) -> None:
        from rebalancer.entrypoints.api.app import create_app

        self.host = host or rt.settings.api_host
        self.port = free_port(self.host, port if port is not None else rt.settings.api_port)
        config = uvicorn.Config(
            create_app(rt),
            host=self.host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="api", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the API server did not start on {self.url}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
