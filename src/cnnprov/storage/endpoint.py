"""A read-only SPARQL endpoint over an open embedded store, on 127.0.0.1.

The embedded store has one opener at a time, and pyoxigraph calls reading a store another
process writes undefined behaviour. So the process that holds a store (a training run's
session, ``cnnprov serve``) also serves reads of it: this endpoint answers the SPARQL 1.1
Protocol at ``/sparql`` (GET or POST, queries only) over the union of the run graphs, and the
holder advertises its URL in the store directory (:mod:`cnnprov.storage.advertisement`).
Readers elsewhere find it there and ask it with the one HTTP client
(:class:`cnnprov.storage.remote.RemoteStore`); each query sees every batch committed up to
that moment (an epoch's records are committed before the next epoch trains), as one snapshot.

A training process's endpoint admits only its owner: it requires the random token of its
advertisement (a file only the owner can read) as ``Authorization: Bearer …`` on every
request, and refuses a ``Host:`` other than the address it is bound to, so that a web page
cannot reach it through a renamed host. It sends no CORS headers. Every endpoint refuses
``SERVICE`` (the process would fetch a URL for whoever asks), bodies over
:data:`MAX_REQUEST_BYTES`, more than :data:`MAX_CONNECTIONS` connections at once, and a
connection idle for :data:`IDLE_TIMEOUT_S`, and a query that runs past its time limit
(:mod:`cnnprov.storage.answers`); a malformed request gets a 4xx answer, never a traceback in
the serving process's output.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import secrets
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pyoxigraph as ox

from cnnprov.rdf.sparql import mentions_keyword
from cnnprov.storage.answers import QueryTimeLimitError, serialize_within
from cnnprov.storage.answers import time_limit_s as answers_time_limit

#: The largest request body (a query) the endpoint reads.
MAX_REQUEST_BYTES = 1 << 20
#: Connections served at once; more are answered 503 and closed.
MAX_CONNECTIONS = 16
#: Seconds a connection may wait for the next byte of a request before it is closed.
IDLE_TIMEOUT_S = 10.0
#: How often the serving loop wakes only to see whether it should stop (requests wake it at once):
#: rarely enough to cost nothing while training (a wake takes the GIL for microseconds), often
#: enough that a run's end waits at most this long for the endpoint to stop.
POLL_INTERVAL_S = 0.05


class ReadEndpoint:
    """A read-only SPARQL endpoint over an open store, on a free port of 127.0.0.1.

    Args:
        store: the open store to serve.
        token: the bearer token every request must carry; ``None`` makes one up, ``""``
            serves without one (``cnnprov serve``, for any SPARQL client).
        time_limit_s: how long a query may take before it is abandoned (default
            ``$CNNPROV_QUERY_TIME_LIMIT_S``, else 5 s; see :mod:`cnnprov.storage.answers`).
    """

    def __init__(self, store: ox.Store, token: str | None = None, time_limit_s: float | None = None) -> None:
        self._store: ox.Store | None = store
        self.time_limit_s = time_limit_s if time_limit_s is not None else answers_time_limit()
        self.token = secrets.token_urlsafe(24) if token is None else token
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the endpoint is not running")
        host, port = self._server.server_address[:2]
        return f"http://{_text(host)}:{port}"

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a daemon thread; returns the base URL."""
        handler = type("Handler", (_Handler,), {"endpoint": self})
        self._server = _BoundedServer((host, port), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL_S},
            name="cnnprov-endpoint",
            daemon=True,
        )
        self._thread.start()
        return self.url

    def serve(self, store: ox.Store | None) -> None:
        """Answer from ``store`` from now on (``None``: 503 until another is given)."""
        self._store = store

    def stop(self, wait: bool = False) -> None:
        """Stop serving and let go of the store (with ``wait``, once the serving thread ended). Safe to call twice."""
        self._store = None  # the handlers read it through this object: from now on they answer 503
        server, self._server = self._server, None
        if server is None:
            return
        if wait:  # shutdown() waits for the serving loop's next poll
            _close_server(server)
            if self._thread is not None:
                self._thread.join()
        else:
            threading.Thread(target=_close_server, args=(server,), name="cnnprov-endpoint-stop", daemon=True).start()

    def admits(self, host_header: str, authorization: str) -> bool:
        """Whether a request with these headers may be answered (see the module docstring)."""
        server = self._server
        if server is None:
            return False
        address, port = _text(server.server_address[0]), server.server_address[1]
        if host_header not in (f"{address}:{port}", f"localhost:{port}"):
            return False
        if not self.token:
            return True
        return hmac.compare_digest(authorization.encode(), f"Bearer {self.token}".encode())

    def select(self, query: str) -> Any:
        store = self._store
        if store is None:
            raise OSError("the endpoint is shutting down")
        return store.query(query, use_default_graph_as_union=True)


def _text(host: str | bytes | bytearray) -> str:
    return host if isinstance(host, str) else bytes(host).decode()


class _BoundedServer(ThreadingHTTPServer):
    """A threading server that serves at most :data:`MAX_CONNECTIONS` connections at once."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that broke (reset, timed out) is the client's business: nothing is printed."""


def _close_server(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


class _Handler(BaseHTTPRequestHandler):
    endpoint: ReadEndpoint
    server_version = "cnnprov-endpoint"
    timeout = IDLE_TIMEOUT_S  # the socket's: an idle or short-changed connection does not hold a thread

    def log_message(self, format: str, *args: Any) -> None:  # keep training output clean
        pass

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if self._refused() or self._not_found(url.path):
            return
        self._answer((urllib.parse.parse_qs(url.query).get("query") or [""])[0])

    def do_POST(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if self._refused() or self._not_found(url.path):
            return
        body = self._body()
        if body is None:
            return
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type == "application/sparql-query":
            self._answer(body)
            return
        form = urllib.parse.parse_qs(body)
        if "update" in form:
            self._send(403, b"this endpoint is read-only: SPARQL Update is refused\n", "text/plain")
            return
        self._answer((form.get("query") or [""])[0])

    def _body(self) -> str | None:
        """The request body as text, or ``None`` once a 4xx has been sent for it."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self._send(400, b"Content-Length is not a number\n", "text/plain")
            return None
        if length < 0 or length > MAX_REQUEST_BYTES:
            self._send(413, f"a request body is at most {MAX_REQUEST_BYTES} bytes\n".encode(), "text/plain")
            return None
        try:
            return self.rfile.read(length).decode("utf-8")
        except UnicodeDecodeError:
            self._send(400, b"the request body is not UTF-8\n", "text/plain")
        except OSError:  # timed out waiting for a body shorter than it said: nothing to answer
            self.close_connection = True
        return None

    def _refused(self) -> bool:
        if self.endpoint.admits(self.headers.get("Host") or "", self.headers.get("Authorization") or ""):
            return False
        self._send(403, b"forbidden: this endpoint answers its own process's readers only\n", "text/plain")
        return True

    def _not_found(self, path: str) -> bool:
        if path == "/sparql":
            return False
        self._send(404, b"not found: use /sparql\n", "text/plain")
        return True

    def _answer(self, query: str) -> None:
        if mentions_keyword(query, "SERVICE"):
            self._send(403, b"SERVICE is refused: this endpoint never fetches other URLs\n", "text/plain")
            return

        def answer() -> None:
            data, content_type = serialize_within(self.endpoint.select(query), self.endpoint.time_limit_s)
            self._send(200, data, content_type)

        self._guarded(answer)

    def _guarded(self, action: Callable[[], None]) -> None:
        try:
            action()
        except QueryTimeLimitError as error:
            self._send(503, json.dumps({"error": "time limit", "message": str(error)}).encode(), "application/json")
        except (SyntaxError, RuntimeError, ValueError) as error:
            self._send(400, json.dumps({"error": "query", "message": str(error)}).encode(), "application/json")
        except OSError as error:
            self._send(503, json.dumps({"error": "store", "message": str(error)}).encode(), "application/json")
        except Exception as error:  # never a traceback in the serving process's output
            self._send(500, json.dumps({"error": "internal", "message": str(error)}).encode(), "application/json")

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
