"""A shared store on a SPARQL 1.1 endpoint: many training processes, many machines, one record.

``ProvLogger(store="http://host:7878")`` records into an Oxigraph server (``pip install
oxigraph``; ``oxigraph serve --location DIR``) or any SPARQL 1.1 Query/Update endpoint, and
every reading command takes the same URL as ``--store``. :class:`RemoteStore` answers the
calls cnnprov makes on an embedded pyoxigraph store (``query``, ``quads_for_pattern``,
``extend``, ``load``, ``remove``) over HTTP with :mod:`urllib`, so the recorder, its writer and
:class:`~cnnprov.analysis.provstore.ProvStore` work unchanged.

Where requests go. A base URL (``http://host:7878``, or a Fuseki dataset
``http://host:3030/ds``) is queried at ``/query`` and updated at ``/update``; a URL that ends
in ``/sparql`` or ``/query`` is the query endpoint itself (``/sparql`` also takes updates, as
Virtuoso's does; ``/query`` is paired with ``/update``). ``cnnprov serve`` prints such a URL.

Writes. Each write of the recorder's writer becomes one SPARQL Update request, so one
transaction on the server (more than :data:`REQUEST_QUADS` quads are split): ``INSERT DATA`` into
the run's named graph, and for a value that replaces another (a run's status, its end time)
``DELETE WHERE`` followed by ``INSERT DATA`` in the same request.
Updates only ever name the run's own graph, so processes that record at the same time never
touch each other's triples. A request that fails (the server went away, restarts, answers
5xx) is retried with exponential backoff; if it still fails, it goes to a local **spool file**
(``./cnnprov-spool/<run id>.ru`` or ``$CNNPROV_SPOOL/<run id>.ru``) and so does everything
after it, in order, until the server answers again: then the spool is sent first. Training
never fails because the server is away. What is left in the spool when the run ends is sent by
``cnnprov push --store URL FILE``. A spool file is itself a valid SPARQL Update request, so
``curl --data-binary @FILE -H 'Content-Type: application/sparql-update' URL/update`` works too.

Reads. Queries run over the union of the run graphs, as on the embedded store. An Oxigraph
server is asked with its ``union-default-graph`` parameter; any other endpoint with the SPARQL
1.1 Protocol's own means, ``default-graph-uri`` and ``named-graph-uri`` naming every named
graph (listed by a first query). ``union="native"`` says the endpoint's default graph already is
the union (GraphDB, Virtuoso, Fuseki with ``unionDefaultGraph``).

Parameters. There is no standard way to send bound variables with a query, and user text is
never pasted into one. A bound value is serialized as an RDF term (N-Triples syntax, escaped;
IRIs are validated by pyoxigraph), and the query is rewritten the way pyoxigraph's
``substitutions`` evaluate it: every occurrence of the variable in the query's WHERE clause
becomes the term (nested groups, ``OPTIONAL``, ``FILTER``, ``GRAPH``, ``MINUS``, and subqueries
that project the variable; not subqueries that do not), and ``VALUES ?var { term }`` at the
start of the WHERE clause keeps the variable in the results, its grouping and its order.
Wrapping the query as a subquery joined with ``VALUES`` would not do: a parameter used inside
a ``BIND`` or a nested ``FILTER`` (``best-runs``' ``order``, ``hyperparameters``' ``include``)
would be unbound where it is used.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyoxigraph as ox

from cnnprov.storage.local import StoreError, is_remote

try:  # a spool file is shared by the training process and `cnnprov push`
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: Environment variable naming the directory of spool files.
SPOOL_ENV = "CNNPROV_SPOOL"
#: Spool directory unless ``$CNNPROV_SPOOL`` names another.
DEFAULT_SPOOL_DIR = "cnnprov-spool"
#: Quads in one ``INSERT DATA`` request at most.
REQUEST_QUADS = 16_384
_SPOOL_HEADER = "# cnnprov spool entry"
#: Seconds a request that only checks whether a spooling endpoint is back may take.
_PROBE_TIMEOUT_S = 10.0
_JSON_RESULTS = "application/sparql-results+json"
_UNION_MODES = ("auto", "oxigraph", "dataset", "native")


def default_spool_path(run_id: str) -> Path:
    """Where a run's unsent batches go: ``$CNNPROV_SPOOL/<run id>.ru``, else ``./cnnprov-spool/``."""
    return Path(os.environ.get(SPOOL_ENV) or DEFAULT_SPOOL_DIR) / f"{run_id}.ru"


class RemoteStore:
    """A SPARQL 1.1 endpoint that answers the calls cnnprov makes on a pyoxigraph ``Store``.

    Args:
        url: the endpoint (see the module docstring for the URL forms).
        spool: file that keeps write requests the endpoint did not take; ``None``
            makes a failed write an error instead.
        union: how queries reach the union of the run graphs: ``"auto"`` (Oxigraph's
            ``union-default-graph`` on an Oxigraph server, else ``"dataset"``),
            ``"oxigraph"``, ``"dataset"`` (``default-graph-uri``/``named-graph-uri`` for
            every named graph) or ``"native"`` (the endpoint's default graph is the union).
        timeout_s: seconds one HTTP request may take.
        retries: further tries of a failed write, ``backoff_s``, twice that, … apart.
        retry_after_s: once writes spool, how long to wait before the endpoint is tried again.

    Example::

        store = RemoteStore("http://127.0.0.1:7878")
        for row in store.query("SELECT ?id WHERE { ?run <https://w3id.org/cnnprov/ns#runId> ?id }",
                               use_default_graph_as_union=True):
            print(row["id"].value)
    """

    def __init__(
        self,
        url: str,
        *,
        spool: str | os.PathLike | None = None,
        union: str = "auto",
        timeout_s: float = 60.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        retry_after_s: float = 30.0,
    ) -> None:
        if not is_remote(url):
            raise StoreError(f"'{url}' is not a SPARQL endpoint URL: give one that starts with http:// or https://")
        if union not in _UNION_MODES:
            raise ValueError(f"union must be one of {', '.join(_UNION_MODES)}, not {union!r}")
        self.url = url.rstrip("/")
        self.query_url, self.update_url = _endpoints(self.url)
        self.spool = Spool(spool) if spool is not None else None
        self._union = union
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._retry_after_s = retry_after_s
        self._lock = threading.RLock()
        self._spooled = self.spool.count() if self.spool is not None else 0
        self._retry_at = 0.0
        self._warned = False

    def __repr__(self) -> str:
        return f"RemoteStore({self.url!r})"

    # -- reading -----------------------------------------------------------------
    def query(
        self,
        query: str,
        *,
        use_default_graph_as_union: bool = False,
        substitutions: dict | None = None,
        **options: Any,
    ) -> Any:
        """Run a query; the result is what ``pyoxigraph.Store.query`` returns for it.

        ``substitutions`` binds variables to RDF terms (see the module docstring); like
        pyoxigraph, only variables the query projects can be bound.
        """
        unsupported = {k for k, v in options.items() if v not in (None, False)}
        if unsupported:
            raise NotImplementedError(
                f"RemoteStore.query does not support {', '.join(sorted(unsupported))}: "
                f"the SPARQL 1.1 Protocol has no such option"
            )
        if substitutions:
            query = bind(query, {var.value: term_text(term) for var, term in substitutions.items()})
        form = [("query", query)]
        if use_default_graph_as_union:
            form += self._union_parameters()
        response = self._request(
            self.query_url,
            urllib.parse.urlencode(form).encode(),
            "application/x-www-form-urlencoded",
            accept=f"{_JSON_RESULTS}, application/n-triples;q=0.9",
            retries=1,
        )
        data, content_type = response
        if content_type == "application/n-triples":
            return [quad.triple for quad in ox.parse(data, format=ox.RdfFormat.N_TRIPLES)]
        return ox.parse_query_results(data, format=ox.QueryResultsFormat.JSON)

    def quads_for_pattern(self, subject: Any, predicate: Any, obj: Any, graph_name: Any = None) -> Iterator[ox.Quad]:
        """The quads matching a pattern (``None`` matches anything), fetched with one SELECT query.

        With ``graph_name=None`` only named graphs are searched: cnnprov writes nothing else,
        and an endpoint whose default graph is the union would return every quad twice.
        """
        positions = (("s", subject), ("p", predicate), ("o", obj))
        pattern = " ".join(term_text(term) if term is not None else f"?{name}" for name, term in positions)
        if isinstance(graph_name, ox.NamedNode):
            where = f"GRAPH {term_text(graph_name)} {{ {pattern} }}"
        elif isinstance(graph_name, ox.DefaultGraph):
            where = pattern
        elif graph_name is None:
            where = f"GRAPH ?g {{ {pattern} }}"
        else:
            raise NotImplementedError(f"RemoteStore cannot search the graph {graph_name!r}")
        variables = [f"?{name}" for name, term in positions if term is None] + (["?g"] if graph_name is None else [])
        projection = " ".join(variables) or "(1 AS ?found)"
        for row in self.query(f"SELECT {projection} WHERE {{ {where} }}"):
            yield ox.Quad(
                subject if subject is not None else row["s"],
                predicate if predicate is not None else row["p"],
                obj if obj is not None else row["o"],
                graph_name if graph_name is not None else row["g"],
            )

    def rdflib_store(self) -> Any:
        """An rdflib ``SPARQLStore`` over this endpoint whose default graph is the union of the run graphs."""
        from rdflib.plugins.stores.sparqlstore import SPARQLStore

        mode = self._union_mode()
        if mode == "oxigraph":
            return SPARQLStore(self.query_url, returnFormat="json", method="POST", params={"union-default-graph": ""})
        # rdflib sends one default-graph-uri at most: an endpoint that cannot make the union
        # itself is queried over its own default graph.
        return SPARQLStore(self.query_url, returnFormat="json", method="POST")

    # -- writing -------------------------------------------------------------------
    def extend(self, quads: Iterable[ox.Quad]) -> None:
        """Insert quads (``INSERT DATA``, one request per :data:`REQUEST_QUADS`)."""
        self.write((), quads)

    bulk_extend = extend

    def add(self, quad: ox.Quad) -> None:
        self.write((), (quad,))

    def remove(self, quad: ox.Quad) -> None:
        """Delete one quad (``DELETE DATA``)."""
        self.write((quad,), ())

    def load(self, input: Any = None, format: ox.RdfFormat | None = None, *, to_graph: Any = None, **options: Any) -> None:
        """Insert RDF text (e.g. N-Quads); it is parsed here and sent as ``INSERT DATA``."""
        path = options.pop("path", None)
        if path is not None:
            input = Path(path).read_bytes()
        quads = ox.parse(input, format=format, **options)
        if to_graph is not None:
            quads = (ox.Quad(q.subject, q.predicate, q.object, to_graph) for q in quads)
        self.write((), quads)

    def update(self, update: str) -> None:
        """Run a SPARQL Update request, retried and spooled like every write."""
        self._send(update)

    def writes(self) -> WriteView:
        """The object a :class:`~cnnprov.storage.writer.QuadWriter` writes to (see :class:`WriteView`)."""
        return WriteView(self)

    def write(self, deletes: Iterable[Any], inserts: Iterable[ox.Quad]) -> None:
        """Delete (quads, or :class:`Pattern`s) then insert, the first chunk in the same request."""
        operations = [delete_operation(item) for item in deletes]
        chunk: list[ox.Quad] = []
        for quad in inserts:
            chunk.append(quad)
            if len(chunk) >= REQUEST_QUADS:
                self._send(" ;\n".join(operations + [insert_operation(chunk)]))
                operations, chunk = [], []
        if chunk:
            operations.append(insert_operation(chunk))
        if operations:
            self._send(" ;\n".join(operations))

    def close(self) -> None:
        """Try once more to send what the spool holds; say where it stays if the endpoint is away."""
        with self._lock:
            if not self._spooled:
                return
            self._retry_at = 0.0
            self._drain()
            if self._spooled:
                log.warning(
                    "cnnprov could not reach the SPARQL endpoint %s: %d requests of this run are kept "
                    "in '%s'. Send them when it answers again: cnnprov push --store %s %s",
                    self.url, self._spooled, self.spool.path, self.url, self.spool.path,
                )

    @property
    def spooled(self) -> int:
        """Write requests waiting in the spool file."""
        return self._spooled

    def push(self, spool: str | os.PathLike) -> int:
        """Send a spool file's requests in order, each retried; returns how many were sent.

        Sent requests leave the file at once, so a push cut short can simply be run again.
        Raises :class:`StoreError` (after keeping the unsent ones) when the endpoint refuses one.
        """
        return Spool(spool).drain(lambda text: self._post_update(text, self._retries))

    # -- HTTP ------------------------------------------------------------------------
    def _send(self, text: str) -> None:
        """One write request: to the endpoint if it answers, else (in order) to the spool."""
        with self._lock:
            if self._spooled:
                if time.monotonic() < self._retry_at or not self._drain():
                    self._spool(text)
                    return
            try:
                self._post_update(text, self._retries)
            except StoreError as error:
                if self.spool is None:
                    raise
                self._retry_at = time.monotonic() + self._retry_after_s
                self._spool(text, error)

    def _spool(self, text: str, error: BaseException | None = None) -> None:
        self.spool.append(text)
        self._spooled += 1
        if not self._warned:
            self._warned = True
            log.warning(
                "cnnprov cannot write to the SPARQL endpoint %s (%s); records are kept in '%s' and "
                "sent when it answers again", self.url, error or "it did not answer", self.spool.path,
            )

    def _drain(self) -> bool:
        """Send the spool (one try per request); ``False`` if the endpoint still does not take it."""
        try:
            self.spool.drain(lambda text: self._post_update(text, 0, timeout_s=min(self._timeout_s, _PROBE_TIMEOUT_S)))
        except StoreError:
            self._retry_at = time.monotonic() + self._retry_after_s
            return False
        finally:
            self._spooled = self.spool.count()
        self._warned = False
        return True

    def _post_update(self, text: str, retries: int, timeout_s: float | None = None) -> None:
        self._request(self.update_url, text.encode("utf-8"), "application/sparql-update", retries=retries, timeout_s=timeout_s)

    def _union_parameters(self) -> list[tuple[str, str]]:
        mode = self._union_mode()
        if mode == "oxigraph":
            return [("union-default-graph", "")]
        if mode == "native":
            return []
        graphs = [row["g"].value for row in self.query("SELECT DISTINCT ?g WHERE { GRAPH ?g {} }")]
        return [("default-graph-uri", g) for g in graphs] + [("named-graph-uri", g) for g in graphs]

    def _union_mode(self) -> str:
        if self._union == "auto":
            probe = self.query_url + "?" + urllib.parse.urlencode({"query": "ASK {}"})
            server = self._request(probe, None, "", accept=_JSON_RESULTS, retries=1, headers_only=True)
            if server.lower().startswith("oxigraph"):
                self._union = "oxigraph"
            elif server.lower().startswith("cnnprov"):  # `cnnprov serve` queries the union already
                self._union = "native"
            else:
                self._union = "dataset"
        return self._union

    def _request(
        self,
        url: str,
        body: bytes | None,
        content_type: str,
        accept: str = "",
        retries: int = 0,
        headers_only: bool = False,
        timeout_s: float | None = None,
    ) -> Any:
        request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
        if content_type:
            request.add_header("Content-Type", content_type)
        if accept:
            request.add_header("Accept", accept)
        delay = self._backoff_s
        for attempt in range(retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=timeout_s or self._timeout_s) as response:
                    if headers_only:
                        return response.headers.get("Server", "")
                    kind = (response.headers.get("Content-Type") or "").split(";")[0].strip()
                    return response.read(), kind
            except urllib.error.HTTPError as error:
                message = _error_message(error)
                if error.code == 400 and body is not None and content_type != "application/sparql-update":
                    raise SyntaxError(message) from None
                if error.code < 500 or attempt == retries:
                    raise StoreError(f"the SPARQL endpoint {self.url} answered {error.code}: {message}") from None
            except (urllib.error.URLError, OSError) as error:  # refused, reset, timed out
                if attempt == retries:
                    reason = getattr(error, "reason", error)
                    raise StoreError(
                        f"cannot reach the SPARQL endpoint {self.url}: {reason}. Start the server "
                        f"(e.g. `oxigraph serve --location DIR --bind 127.0.0.1:7878`) or check the URL"
                    ) from None
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover


class Pattern(tuple):
    """``(subject, predicate, object, graph)`` with ``None`` for any: what :class:`WriteView` deletes."""

    __slots__ = ()


class WriteView:
    """What a :class:`~cnnprov.storage.writer.QuadWriter` writes to when the store is an endpoint.

    The writer replaces a value (a run's status) by asking for the quads that hold it,
    removing each, and adding the new ones. Over HTTP that would be a read, several requests
    and a moment with no status at all; with the endpoint away, a read that cannot be
    answered. Here ``quads_for_pattern`` answers with the pattern itself, ``remove`` of a
    pattern queues ``DELETE WHERE`` on it, and the next ``extend`` sends the deletions and
    the insertions in one request: one transaction, and a request that can wait in the spool.
    It only writes: read through the :class:`RemoteStore` itself.
    """

    def __init__(self, store: RemoteStore) -> None:
        self._store = store
        self._deletes: list[Any] = []

    def quads_for_pattern(self, subject: Any, predicate: Any, obj: Any, graph_name: Any = None) -> list[Pattern]:
        return [Pattern((subject, predicate, obj, graph_name))]

    def remove(self, quad: Any) -> None:
        self._deletes.append(quad)

    def extend(self, quads: Iterable[ox.Quad]) -> None:
        deletes, self._deletes = self._deletes, []
        self._store.write(deletes, quads)

    bulk_extend = extend

    def add(self, quad: ox.Quad) -> None:
        self.extend((quad,))

    def load(self, input: Any = None, format: ox.RdfFormat | None = None, **options: Any) -> None:
        if self._deletes:
            self.extend(())
        self._store.load(input, format, **options)

    def update(self, update: str) -> None:
        if self._deletes:
            self.extend(())
        self._store.update(update)

    def flush(self) -> None:
        """Send deletions not yet followed by an insertion."""
        if self._deletes:
            self.extend(())


# -- the spool -----------------------------------------------------------------
class Spool:
    """An append-only file of SPARQL Update requests, sent later in order.

    Each entry is a comment line ``# cnnprov spool entry …`` and one request ending in `` ;``,
    so the whole file is one valid SPARQL Update request as well. Appending and sending hold
    an advisory lock (POSIX), so the training process and ``cnnprov push`` never send the
    same entry twice.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Spool({str(self.path)!r})"

    def append(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid()})
        with _open_locked(self.path, "a") as handle:
            handle.write(f"{_SPOOL_HEADER} {header}\n{text.rstrip()} ;\n")
            handle.flush()
            os.fsync(handle.fileno())

    def count(self) -> int:
        return len(self.entries())

    def entries(self) -> list[str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return _split_entries(text)

    def drain(self, send: Callable[[str], None]) -> int:
        """Send every entry in order; sent ones leave the file (removed when empty). Returns the count sent.

        On an error the entries not sent stay, and the error propagates.
        """
        try:
            handle = _open_locked(self.path, "r+")
        except FileNotFoundError:
            return 0
        with handle:
            entries = _split_entries(handle.read())
            sent = 0
            try:
                for entry in entries:
                    send(entry)
                    sent += 1
            finally:
                if sent == len(entries):
                    self.path.unlink(missing_ok=True)
                elif sent:
                    handle.seek(0)
                    handle.write("".join(entries[sent:]))
                    handle.truncate()
                    handle.flush()
                    os.fsync(handle.fileno())
            return sent


def _open_locked(path: Path, mode: str) -> Any:
    """Open ``path`` holding an exclusive advisory lock (released on close).

    A drain may have removed the file while this process waited for the lock: then the file
    is opened again (``"a"`` creates it anew; ``"r+"`` raises ``FileNotFoundError``).
    """
    while True:
        handle = open(path, mode, encoding="utf-8")
        if fcntl is None:
            return handle
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            if os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
                return handle
        except FileNotFoundError:
            if "a" not in mode:
                handle.close()
                raise
        handle.close()


def _split_entries(text: str) -> list[str]:
    entries: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.startswith(_SPOOL_HEADER) or not entries:
            entries.append(line)
        else:
            entries[-1] += line
    return [entry for entry in entries if entry.strip()]


# -- SPARQL text -----------------------------------------------------------------
def _endpoints(url: str) -> tuple[str, str]:
    path = urllib.parse.urlsplit(url).path
    if path.endswith("/sparql"):
        return url, url
    if path.endswith("/query"):
        return url, url[: -len("query")] + "update"
    return url + "/query", url + "/update"


def insert_operation(quads: list[ox.Quad]) -> str:
    """``INSERT DATA`` of ``quads``, grouped by graph."""
    return _data_operation("INSERT", quads)


def delete_data_operation(quads: list[ox.Quad]) -> str:
    """``DELETE DATA`` of ``quads``, grouped by graph."""
    return _data_operation("DELETE", quads)


def _data_operation(keyword: str, quads: list[ox.Quad]) -> str:
    by_graph: dict[Any, list[ox.Triple]] = {}
    for quad in quads:
        by_graph.setdefault(quad.graph_name, []).append(quad.triple)
    parts = []
    for graph, triples in by_graph.items():
        text = _harden(ox.serialize(triples, format=ox.RdfFormat.N_TRIPLES).decode("utf-8"))
        if isinstance(graph, ox.DefaultGraph):
            parts.append(text)
        else:
            parts.append(f"GRAPH {term_text(graph)} {{\n{text}}}\n")
    return f"{keyword} DATA {{\n" + "".join(parts) + "}"


def delete_operation(item: Any) -> str:
    """``DELETE DATA`` of a quad, or ``DELETE WHERE`` of a :class:`Pattern` (``None`` terms match anything)."""
    if isinstance(item, Pattern):
        subject, predicate, obj, graph = item
        pattern = " ".join(
            term_text(term) if term is not None else f"?{name}" for name, term in (("s", subject), ("p", predicate), ("o", obj))
        )
        if graph is None:
            return f"DELETE WHERE {{ GRAPH ?g {{ {pattern} }} }}"
        if isinstance(graph, ox.DefaultGraph):
            return f"DELETE WHERE {{ {pattern} }}"
        return f"DELETE WHERE {{ GRAPH {term_text(graph)} {{ {pattern} }} }}"
    triple = " ".join(term_text(term) for term in (item.subject, item.predicate, item.object))
    if isinstance(item.graph_name, ox.DefaultGraph):
        return f"DELETE DATA {{ {triple} . }}"
    return f"DELETE DATA {{ GRAPH {term_text(item.graph_name)} {{ {triple} . }} }}"


def term_text(term: Any) -> str:
    """An RDF term as SPARQL text: N-Triples syntax, escaped so that no endpoint reads it otherwise."""
    if isinstance(term, ox.NamedNode):
        return str(term)  # pyoxigraph refuses IRIs with spaces, quotes, '<', '>', '{', '}' or '\'
    if isinstance(term, ox.Literal):
        return _harden(str(term))
    raise TypeError(f"cannot send a {type(term).__name__} to a SPARQL endpoint as a bound value")


# An escaped backslash followed by "u" reads as a \u escape to a parser that decodes \u
# sequences before parsing (SPARQL 1.1 allows it); "u" itself is then written as \u0075.
_ESCAPES = re.compile(r"\\\\([uU])|\\.", re.S)


def _harden(text: str) -> str:
    if "\\\\u" not in text and "\\\\U" not in text:
        return text
    return _ESCAPES.sub(lambda m: ("\\\\\\u0075" if m.group(1) == "u" else "\\\\\\u0055") if m.group(1) else m.group(0), text)


_TOKENS = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<comment>\#[^\n\r]*)
    | (?P<iri><[^<>"{}|^`\\\x00-\x20]*>)
    | (?P<string>\"\"\"(?:[^"\\]|\\.|"(?!""))*\"\"\"|'''(?:[^'\\]|\\.|'(?!''))*'''|"(?:[^"\\\n\r]|\\.)*"|'(?:[^'\\\n\r]|\\.)*')
    | (?P<var>[?$][\w\u00B7\u0300-\u036F\u203F-\u2040]+)
    | (?P<word>[^\s{}()\[\];,"'<>\#?$=!|&*+/^]+)
    | (?P<punct>.)
    """,
    re.X | re.S,
)
_FORMS = {"SELECT", "ASK", "CONSTRUCT", "DESCRIBE"}


def bind(query: str, terms: dict[str, str]) -> str:
    """``query`` with variables bound to terms (already SPARQL text, see :func:`term_text`).

    Mirrors pyoxigraph's ``substitutions``: each variable is replaced by its term throughout
    the WHERE clause (but not inside a subquery that does not project it), and bound with
    ``VALUES`` at the start of the WHERE clause, so it is still projected, grouped and ordered by.

    Raises:
        RuntimeError: a variable the query does not project, or a query that is not SELECT or ASK.
    """
    tokens = [[m.lastgroup, m.group()] for m in _TOKENS.finditer(query)]
    form = next((i for i, (kind, text) in enumerate(tokens) if kind == "word" and text.upper() in _FORMS), None)
    if form is None or tokens[form][1].upper() not in ("SELECT", "ASK"):
        raise RuntimeError("only SELECT and ASK queries take bound variables")
    start = _first_brace(tokens, form + 1)
    if tokens[form][1].upper() == "SELECT":
        projected = _projection(tokens, form + 1, start)
        for name in terms:
            if projected is not None and name not in projected:
                raise RuntimeError(f"The SPARQL query does not contains variable ?{name} in its SELECT projection")
    inserts = {start: " " + _values(terms) + "\n"}
    _substitute(tokens, start, _matching(tokens, start), terms, inserts)
    return "".join(text + inserts.get(i, "") for i, (_, text) in enumerate(tokens))


def _values(terms: dict[str, str]) -> str:
    names = " ".join(f"?{name}" for name in terms)
    return f"VALUES ({names}) {{ ({' '.join(terms.values())}) }}"


def _significant(tokens: list, index: int) -> int:
    while index < len(tokens) and tokens[index][0] in ("space", "comment"):
        index += 1
    return index


def _first_brace(tokens: list, index: int) -> int:
    depth = 0
    for i in range(index, len(tokens)):
        text = tokens[i][1]
        if text == "(":
            depth += 1
        elif text == ")":
            depth -= 1
        elif text == "{" and depth == 0:
            return i
    raise SyntaxError("the query has no WHERE clause ('{' expected)")


def _matching(tokens: list, index: int) -> int:
    depth = 0
    for i in range(index, len(tokens)):
        if tokens[i][0] != "punct":
            continue
        if tokens[i][1] == "{":
            depth += 1
        elif tokens[i][1] == "}":
            depth -= 1
            if depth == 0:
                return i
    raise SyntaxError("unbalanced braces in the query ('}' expected)")


def _projection(tokens: list, start: int, end: int) -> set[str] | None:
    """Variables a SELECT clause projects (``None`` for ``*``)."""
    names: set[str] = set()
    depth = 0
    previous = ""
    for kind, text in tokens[start:end]:
        if kind in ("space", "comment"):
            continue
        if text == "(":
            depth += 1
        elif text == ")":
            depth -= 1
        elif text == "*" and depth == 0:
            return None
        elif kind == "var" and (depth == 0 or previous == "AS"):
            names.add(text[1:])
        previous = text.upper()
    return names


def _substitute(tokens: list, start: int, end: int, terms: dict[str, str], inserts: dict[int, str]) -> None:
    """Replace the variables of ``terms`` between the braces at ``start`` and ``end``; text to add
    after a token goes to ``inserts`` (by token index), so that indexes stay valid."""
    i = start + 1
    previous = ""
    values_header = False
    while i < end:
        kind, text = tokens[i]
        if kind in ("space", "comment"):
            i += 1
            continue
        if text == "{" and kind == "punct":
            after = _significant(tokens, i + 1)
            if after < end and tokens[after][0] == "word" and tokens[after][1].upper() == "SELECT":
                # a subquery: its own scope, entered only for the variables it projects
                group_end = _matching(tokens, i)
                where = _first_brace(tokens, after + 1)
                projected = _projection(tokens, after + 1, where)
                inner = {n: t for n, t in terms.items() if projected is None or n in projected}
                if inner:
                    _substitute(tokens, where, _matching(tokens, where), inner, inserts)
                    inserts[where] = " " + _values(inner) + "\n"
                i, previous = group_end + 1, "}"
                continue
            if values_header:  # inline data: terms only
                values_header = False
                i, previous = _matching(tokens, i) + 1, "}"
                continue
        if kind == "word" and text.upper() == "VALUES":
            values_header = True
        elif kind == "var" and text[1:] in terms and not values_header and previous != "AS":
            tokens[i] = ["term", terms[text[1:]]]
        previous = text.upper()
        i += 1


def _error_message(error: urllib.error.HTTPError) -> str:
    try:
        text = error.read().decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text[:500] or error.reason or ""
