"""Run the app with uvicorn: in the foreground (``tunelab serve``) or in a thread (tests, bench).

Graceful shutdown: on SIGINT/SIGTERM uvicorn stops accepting connections and waits for the
in-flight responses (streams included) to finish; then the app's lifespan stops the worker.
"""

from __future__ import annotations

import socket
import threading
import time

from tunelab.errors import ServeError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def make_server(app, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning"):
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=None,
                            access_log=False)
    return uvicorn.Server(config)


def run_server(app, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    """Serve until interrupted (blocking)."""
    try:
        make_server(app, host, port, log_level).run()
    except OSError as err:
        raise ServeError(f"cannot listen on {host}:{port}: {err}\n  fix: pick another --port") from err


class ServerThread:
    """Serve ``app`` in a background thread on a free 127.0.0.1 port; ``stop()`` shuts it down."""

    def __init__(self, app, host: str = "127.0.0.1", port: int | None = None):
        self.host, self.port = host, port or free_port(host)
        self.server = make_server(app, self.host, self.port)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise ServeError(f"the test server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def __exit__(self, *exc) -> None:
        self.stop()
