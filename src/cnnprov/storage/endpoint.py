"""Reading a store while a training process writes it.

The embedded store has one opener at a time, and pyoxigraph calls reading a
store another process writes undefined behaviour. So the process that writes
also serves reads: while a run records, its recorder runs a small read-only
SPARQL endpoint on 127.0.0.1 over the very store it writes, and advertises its
address in ``cnnprov-endpoint.json`` inside the store directory.

:class:`~cnnprov.analysis.provstore.ProvStore` (and so every ``cnnprov`` command) finds a
locked store's endpoint there and asks it instead; a reader in the training
process itself uses the open store directly. Either way each query sees every
batch committed up to that moment (an epoch's records are committed before the
next epoch trains), as one consistent snapshot.

The endpoint speaks the SPARQL 1.1 Protocol at ``/sparql`` (GET or POST, read
only), so any SPARQL client can use it too, plus two routes of cnnprov's own:
``/cnnprov/select`` (a query with bound terms, JSON in and out) and
``/cnnprov/quads`` (the quads of one named graph, or all, as N-Quads).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyoxigraph as ox

from cnnprov.storage.local import is_process_alive

ENDPOINT_FILE = "cnnprov-endpoint.json"
_TIMEOUT_S = 60.0

# Stores this process is writing, by resolved path: readers in the same process use them directly.
_IN_PROCESS: dict[str, ox.Store] = {}
_IN_PROCESS_LOCK = threading.Lock()


# -- serving -----------------------------------------------------------------
class ReadEndpoint:
    """A read-only SPARQL endpoint over an open store, on a free port of 127.0.0.1.

    Args:
        store: the open store to serve.
        directory: where to advertise the endpoint (the store directory), or ``None``.
        run_id: the run that writes the store, for the advertisement.
    """

    def __init__(self, store: ox.Store, directory: str | os.PathLike | None = None, run_id: str = "") -> None:
        self._store: ox.Store | None = store
        self._directory = Path(directory) if directory is not None else None
        self._run_id = run_id
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the endpoint is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a daemon thread; returns the base URL."""
        handler = type("Handler", (_Handler,), {"endpoint": self})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        # The loop wakes every poll_interval only to see whether it should stop (requests wake it
        # at once); stop() does not wait for it, so wake it rarely: each wake takes the GIL.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.5}, name="cnnprov-endpoint", daemon=True
        )
        self._thread.start()
        if self._directory is not None:
            info = {"url": self.url, "pid": os.getpid(), "host": socket.gethostname(), "run_id": self._run_id}
            (self._directory / ENDPOINT_FILE).write_text(json.dumps(info))
            with _IN_PROCESS_LOCK:
                _IN_PROCESS[_key(self._directory)] = self._store
        return self.url

    def stop(self) -> None:
        """Stop serving and let go of the store. Safe to call twice."""
        if self._directory is not None:
            with _IN_PROCESS_LOCK:
                if _IN_PROCESS.get(_key(self._directory)) is self._store:
                    del _IN_PROCESS[_key(self._directory)]
            advertised = _read_advertisement(self._directory)
            if advertised and self._server is not None and advertised.get("url") == self.url:
                (self._directory / ENDPOINT_FILE).unlink(missing_ok=True)
        self._store = None  # the handlers read it through this object: from now on they answer 503
        server, self._server = self._server, None
        if server is not None:
            # shutdown() waits for the serving loop's next poll; don't make the training thread wait
            threading.Thread(target=_close_server, args=(server,), name="cnnprov-endpoint-stop", daemon=True).start()

    # what the handler calls
    def _select(self, query: str, substitutions: dict | None = None) -> Any:
        store = self._store
        if store is None:
            raise OSError("the endpoint is shutting down")
        return store.query(query, use_default_graph_as_union=True, substitutions=substitutions or None)

    def _quads(self, graph: str | None) -> bytes:
        store = self._store
        if store is None:
            raise OSError("the endpoint is shutting down")
        if graph:
            quads = store.quads_for_pattern(None, None, None, ox.NamedNode(graph))
        else:
            quads = (q for q in store.quads_for_pattern(None, None, None) if q.graph_name != ox.DefaultGraph())
        return ox.serialize(quads, format=ox.RdfFormat.N_QUADS)


def _close_server(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


class _Handler(BaseHTTPRequestHandler):
    endpoint: ReadEndpoint
    server_version = "cnnprov-endpoint"

    def log_message(self, format: str, *args: Any) -> None:  # keep training output clean
        pass

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        params = urllib.parse.parse_qs(url.query)
        if url.path == "/sparql":
            self._answer_query((params.get("query") or [""])[0], None)
        elif url.path == "/cnnprov/quads":
            self._guarded(lambda: self._send(200, self.endpoint._quads((params.get("graph") or [None])[0]), "application/n-quads"))
        else:
            self._send(404, b"not found: use /sparql\n", "text/plain")

    def do_POST(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if url.path == "/cnnprov/select":
            request = json.loads(body or b"{}")
            bindings = {ox.Variable(name): _term_from_json(term) for name, term in request.get("substitutions", {}).items()}
            self._answer_query(request.get("query", ""), bindings)
        elif url.path == "/sparql":
            if content_type == "application/sparql-query":
                self._answer_query(body.decode("utf-8"), None)
            else:
                form = urllib.parse.parse_qs(body.decode("utf-8"))
                if "update" in form:
                    self._send(403, b"this endpoint is read-only: SPARQL Update is refused\n", "text/plain")
                    return
                self._answer_query((form.get("query") or [""])[0], None)
        else:
            self._send(404, b"not found: use /sparql\n", "text/plain")

    def _answer_query(self, query: str, bindings: dict | None) -> None:
        def answer() -> None:
            result = self.endpoint._select(query, bindings)
            if isinstance(result, ox.QueryTriples):
                self._send(200, ox.serialize(result, format=ox.RdfFormat.N_TRIPLES), "application/n-triples")
            else:
                data = result.serialize(format=ox.QueryResultsFormat.JSON)
                self._send(200, data, "application/sparql-results+json")

        self._guarded(answer)

    def _guarded(self, action: Any) -> None:
        try:
            action()
        except SyntaxError as error:
            self._send(400, json.dumps({"error": "syntax", "message": str(error)}).encode(), "application/json")
        except (RuntimeError, ValueError) as error:
            self._send(400, json.dumps({"error": "query", "message": str(error)}).encode(), "application/json")
        except OSError as error:
            self._send(503, json.dumps({"error": "store", "message": str(error)}).encode(), "application/json")

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


# -- reading -----------------------------------------------------------------
class EndpointStore:
    """The part of ``pyoxigraph.Store``'s reading API that ProvStore uses, answered by an endpoint."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def __repr__(self) -> str:
        return f"EndpointStore({self.url!r})"

    def query(self, query: str, use_default_graph_as_union: bool = True, substitutions: dict | None = None) -> Any:
        payload = {
            "query": query,
            "substitutions": {var.value: _term_to_json(term) for var, term in (substitutions or {}).items()},
        }
        data = self._request("/cnnprov/select", json.dumps(payload).encode(), "application/json")
        return ox.parse_query_results(data, format=ox.QueryResultsFormat.JSON)

    def quads_for_pattern(self, subject: Any, predicate: Any, obj: Any, graph_name: Any = None) -> Iterator[ox.Quad]:
        if subject is not None or predicate is not None or obj is not None:
            raise NotImplementedError("an endpoint store serves whole graphs only: pass None for subject, predicate and object")
        query = f"?graph={urllib.parse.quote(graph_name.value)}" if isinstance(graph_name, ox.NamedNode) else ""
        return iter(ox.parse(self._request(f"/cnnprov/quads{query}"), format=ox.RdfFormat.N_QUADS))

    def _request(self, route: str, body: bytes | None = None, content_type: str = "") -> bytes:
        request = urllib.request.Request(self.url + route, data=body, method="POST" if body is not None else "GET")
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            detail = _error_detail(error)
            if detail.get("error") == "syntax":
                raise SyntaxError(detail["message"]) from None
            if detail.get("error") == "query":
                raise RuntimeError(detail["message"]) from None
            raise OSError(f"the training process serving this store answered {error.code}: {detail.get('message', '')}") from None
        except (urllib.error.URLError, OSError) as error:
            raise OSError(f"cannot reach the training process serving this store at {self.url}: {error}") from None


def live_store(directory: str | os.PathLike) -> ox.Store | EndpointStore | None:
    """How to read a store that a training process holds: its open store (same process),
    its endpoint (another process on this host), or ``None`` if nothing serves it."""
    with _IN_PROCESS_LOCK:
        store = _IN_PROCESS.get(_key(Path(directory)))
    if store is not None:
        return store
    info = _read_advertisement(Path(directory))
    if not info or not info.get("url"):
        return None
    if is_process_alive(info.get("host"), info.get("pid")) is False:
        return None  # left behind by a killed process
    return EndpointStore(info["url"])


def serving_run_id(directory: str | os.PathLike) -> str | None:
    """The id of the run whose live process serves this store, if one does."""
    info = _read_advertisement(Path(directory))
    if not info or is_process_alive(info.get("host"), info.get("pid")) is False:
        return None
    return info.get("run_id") or None


def wait_for_endpoint(directory: str | os.PathLike, timeout_s: float = 30.0) -> str:
    """Wait until a training process advertises an endpoint for this store; returns its URL."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = _read_advertisement(Path(directory))
        if info and info.get("url"):
            return info["url"]
        time.sleep(0.05)
    raise TimeoutError(f"no training process served '{directory}' within {timeout_s:.0f} s")


def _read_advertisement(directory: Path) -> dict | None:
    try:
        return json.loads((directory / ENDPOINT_FILE).read_text())
    except (OSError, ValueError):
        return None


def _key(directory: Path) -> str:
    return str(directory.resolve())


def _error_detail(error: urllib.error.HTTPError) -> dict:
    try:
        return json.loads(error.read() or b"{}")
    except ValueError:
        return {}


def _term_to_json(term: Any) -> dict:
    if isinstance(term, ox.NamedNode):
        return {"type": "uri", "value": term.value}
    if isinstance(term, ox.Literal):
        encoded = {"type": "literal", "value": term.value}
        if term.language:
            encoded["xml:lang"] = term.language
        else:
            encoded["datatype"] = term.datatype.value
        return encoded
    raise TypeError(f"cannot send a {type(term).__name__} as a query binding")


def _term_from_json(encoded: dict) -> Any:
    if encoded.get("type") == "uri":
        return ox.NamedNode(encoded["value"])
    if encoded.get("xml:lang"):
        return ox.Literal(encoded["value"], language=encoded["xml:lang"])
    datatype = encoded.get("datatype")
    return ox.Literal(encoded["value"], datatype=ox.NamedNode(datatype) if datatype else None)
