"""Serve the dashboard on 127.0.0.1 (uvicorn), behind its token guard, in the foreground or a thread."""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time

from cnnprov.errors import StoreError
from cnnprov.storage.location import StoreLocation
from cnnprov.ui.app import create_app
from cnnprov.ui.guard import TokenGuard


class Dashboard:
    """The dashboard of one store, served on ``127.0.0.1:port``.

    Example::

        dashboard = Dashboard("provenance")
        print(dashboard.start())   # http://127.0.0.1:PORT/?token=…
        ...
        dashboard.stop()

    Args:
        store: a store directory, a SPARQL endpoint URL, or a :class:`StoreLocation`.
        port: the port (0, the default, takes a free one).
        token: the secret the URL carries; made up when not given.
    """

    def __init__(self, store: str | StoreLocation | None = None, port: int = 0, token: str | None = None) -> None:
        self.location = store if isinstance(store, StoreLocation) else StoreLocation.parse(store)
        self.token = token or secrets.token_urlsafe(24)
        self.guard = TokenGuard(create_app(self.location), self.token)
        self._socket = _bind(port)
        self.port: int = self._socket.getsockname()[1]
        self.guard.allow_port(self.port)
        self._server: object | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The address with the token: what a browser opens."""
        return f"{self.address}/?token={self.token}"

    def _uvicorn(self) -> object:
        import uvicorn

        config = uvicorn.Config(self.guard, log_level="warning", access_log=False, lifespan="off")
        return uvicorn.Server(config)

    def serve_forever(self) -> None:
        """Answer requests until Ctrl-C."""
        server = self._uvicorn()
        asyncio.run(server.serve(sockets=[self._socket]))  # type: ignore[attr-defined]

    def start(self) -> str:
        """Answer requests on a background thread; returns :attr:`url` once it is listening."""
        self._server = server = self._uvicorn()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[self._socket])),  # type: ignore[attr-defined]
            name="cnnprov-ui",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not getattr(server, "started", False):
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise StoreError("the dashboard did not start within 10 s")
            time.sleep(0.02)
        return self.url

    def stop(self) -> None:
        """Stop answering and close the port."""
        if self._server is not None:
            self._server.should_exit = True  # type: ignore[attr-defined]
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._socket.close()


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as error:
        sock.close()
        raise StoreError(
            f"cannot serve on 127.0.0.1:{port}: {error.strerror or error}; choose another --port"
        ) from None
    sock.listen(128)
    return sock
