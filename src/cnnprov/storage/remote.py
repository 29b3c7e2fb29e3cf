"""A store on a SPARQL 1.1 endpoint: the one HTTP client cnnprov has.

It reads and writes a shared store (an Oxigraph server, ``oxigraph serve --location DIR``,
or any SPARQL 1.1 Query/Update endpoint) and reads a store a training process holds, through
that process's read endpoint (:mod:`cnnprov.storage.endpoint`). Everything goes over the
SPARQL 1.1 Protocol with :mod:`urllib`.

Where requests go. A base URL (``http://host:7878``, a Fuseki dataset ``http://host:3030/ds``) is
queried at ``/query`` and updated at ``/update``; a URL ending in ``/sparql`` (which takes updates
too, as Virtuoso's does) or ``/query`` (paired with ``/update``) is the query endpoint itself.

Writes. Each write of a run's writer becomes one SPARQL Update request, so one transaction on
the server (more than :data:`REQUEST_QUADS` quads are split): ``INSERT DATA`` into the run's
named graph, and for a value that replaces another (a run's status, its end time) ``DELETE
WHERE`` and ``INSERT DATA`` in the same request. Updates only ever name the run's own graph, so
processes that record at the same time never touch each other's triples. A request that fails
(the server went away, restarts, answers 5xx) is retried with exponential backoff; if it still
fails, it goes to the run's spool file (:mod:`cnnprov.storage.spool`) and so does everything
after it, in order, until the server answers again: then the spool is sent first. Training
never fails because the server is away. What is left in the spool when the run ends is sent
by ``cnnprov push --store URL FILE``.

Reads. Queries run over the union of the run graphs, as on the embedded store. An Oxigraph
server is asked with its ``union-default-graph`` parameter; any other endpoint with the SPARQL
1.1 Protocol's own means, ``default-graph-uri`` and ``named-graph-uri`` naming every named
graph (listed by a first query). ``union="native"`` says the endpoint's default graph already is
the union (GraphDB, Virtuoso, Fuseki with ``unionDefaultGraph``, cnnprov's own read endpoints).
Bound variables reach the endpoint as standard SPARQL ``VALUES`` blocks (:func:`cnnprov.rdf.sparql.bind_values`).
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyoxigraph as ox

from cnnprov.errors import QueryError, StoreError
from cnnprov.rdf.sparql import Term, bind_terms, delete_operation, insert_operation, quads_query, replace_operation
from cnnprov.storage.spool import Spool, default_spool_path

if TYPE_CHECKING:
    from cnnprov.storage.location import StoreLocation
    from cnnprov.storage.protocols import Reader, Session, WriteTarget

log = logging.getLogger(__name__)

#: Quads in one ``INSERT DATA`` request at most.
REQUEST_QUADS = 16_384
#: Seconds a request that only checks whether a spooling endpoint is back may take.
_PROBE_TIMEOUT_S = 10.0
_JSON_RESULTS = "application/sparql-results+json"


class RemoteStore:
    """A SPARQL 1.1 endpoint, read (and updated) with the calls cnnprov makes on a pyoxigraph ``Store``.

    Args:
        location: the endpoint and its options (see :class:`~cnnprov.storage.location.StoreLocation`:
            ``union``, ``timeout_s``, ``retries``, ``backoff_s``, HTTP ``headers``); or its URL.
        serving_run: the run a training process records, when this is that process's endpoint.

    Example::

        store = RemoteStore("http://127.0.0.1:7878")
        for row in store.query("SELECT ?id WHERE { ?run <https://w3id.org/cnnprov/ns#runId> ?id }",
                               use_default_graph_as_union=True):
            print(row["id"].value)
    """

    def __init__(self, location: StoreLocation | str, serving_run: str | None = None) -> None:
        if isinstance(location, str):
            from cnnprov.storage.location import StoreLocation

            location = StoreLocation.parse(location)
        if location.url is None:
            raise StoreError(f"'{location}' is not a SPARQL endpoint URL: give one that starts with http:// or https://")
        self.location = location
        self.url = location.url
        self.query_url, self.update_url = _endpoints(self.url)
        self._union = location.union
        self._serving_run = serving_run

    def __repr__(self) -> str:
        return f"RemoteStore({self.url!r})"

    # -- reading -----------------------------------------------------------------
    def query(
        self,
        query: str,
        *,
        use_default_graph_as_union: bool = False,
        substitutions: Mapping[ox.Variable, Term] | None = None,
    ) -> Any:
        """Run a query; the result is what ``pyoxigraph.Store.query`` returns for it.

        ``substitutions`` binds variables to RDF terms with ``VALUES`` (:func:`cnnprov.rdf.sparql.bind_terms`).
        """
        if substitutions:
            try:
                query = bind_terms(query, substitutions)
            except (RuntimeError, SyntaxError, TypeError) as error:
                raise QueryError(str(error)) from None
        form = [("query", query)]
        if use_default_graph_as_union:
            form += self._union_parameters()
        data, content_type = self._request(
            self.query_url,
            urllib.parse.urlencode(form).encode(),
            "application/x-www-form-urlencoded",
            accept=f"{_JSON_RESULTS}, application/n-triples;q=0.9",
            retries=1,
        )
        if content_type == "application/n-triples":
            return [quad.triple for quad in ox.parse(data, format=ox.RdfFormat.N_TRIPLES)]
        return ox.parse_query_results(data, format=ox.QueryResultsFormat.JSON)

    def quads_for_pattern(self, subject: Any, predicate: Any, object: Any, graph_name: Any = None) -> Iterator[ox.Quad]:
        """The quads matching a pattern (``None`` matches anything), fetched with one SELECT query.

        With ``graph_name=None`` only named graphs are searched: cnnprov writes nothing else,
        and an endpoint whose default graph is the union would return every quad twice.
        """
        text, _ = quads_query(subject, predicate, object, graph_name)
        for row in self.query(text):
            yield ox.Quad(
                subject if subject is not None else row["s"],
                predicate if predicate is not None else row["p"],
                object if object is not None else row["o"],
                graph_name if graph_name is not None else row["g"],
            )

    def rdflib_store(self) -> Any:
        """An rdflib ``SPARQLStore`` over this endpoint whose default graph is the union of the run graphs."""
        from rdflib.plugins.stores.sparqlstore import SPARQLStore

        headers = dict(self.location.headers)
        if self._union_mode() == "oxigraph":
            return SPARQLStore(
                self.query_url, returnFormat="json", method="POST", params={"union-default-graph": ""}, headers=headers
            )
        # rdflib sends one default-graph-uri at most: an endpoint that cannot make the union
        # itself is queried over its own default graph.
        return SPARQLStore(self.query_url, returnFormat="json", method="POST", headers=headers)

    def serving_run_id(self) -> str | None:
        return self._serving_run

    def close(self) -> None:
        """Nothing is held open between requests."""

    # -- writing -------------------------------------------------------------------
    def load(self, input: bytes | str, format: ox.RdfFormat) -> None:
        """Insert RDF text (e.g. N-Quads): parsed here, sent as ``INSERT DATA`` requests."""
        RemoteTarget(self).extend(ox.parse(input, format=format))

    def post_update(self, text: str, retries: int | None = None, timeout_s: float | None = None) -> None:
        """Send one SPARQL Update request, retried with backoff; raises :class:`StoreError` if it fails."""
        self._request(
            self.update_url,
            text.encode("utf-8"),
            "application/sparql-update",
            retries=self.location.retries if retries is None else retries,
            timeout_s=timeout_s,
        )

    def push(self, spool: str | Path) -> int:
        """Send a spool file's requests in order, each retried; returns how many were sent.

        Sent requests leave the file at once, so a push cut short can simply be run again.
        Raises :class:`StoreError` (after keeping the unsent ones) when the endpoint refuses one.
        """
        return Spool(spool).drain(self.post_update)

    # -- HTTP ------------------------------------------------------------------------
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
            server = self._request(probe, None, "", accept=_JSON_RESULTS, retries=1, headers_only=True)[0].decode()
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
    ) -> tuple[bytes, str]:
        """``(body, content type)`` of the answer (``(Server header, "")`` with ``headers_only``)."""
        request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
        for name, value in self.location.headers:
            request.add_header(name, value)
        if content_type:
            request.add_header("Content-Type", content_type)
        if accept:
            request.add_header("Accept", accept)
        delay = self.location.backoff_s
        for attempt in range(retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=timeout_s or self.location.timeout_s) as response:
                    if headers_only:
                        return (response.headers.get("Server", "") or "").encode(), ""
                    kind = (response.headers.get("Content-Type") or "").split(";")[0].strip()
                    return response.read(), kind
            except urllib.error.HTTPError as error:
                message = _error_message(error)
                if error.code == 400 and body is not None and content_type != "application/sparql-update":
                    raise QueryError(message) from None
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


class RemoteTarget:
    """A run's writes to an endpoint: one request a call, spooled in order while the endpoint is away.

    Args:
        store: the endpoint.
        spool: the file that keeps requests the endpoint did not take; ``None`` makes a failed
            write a :class:`StoreError` instead.
    """

    def __init__(self, store: RemoteStore, spool: str | Path | None = None) -> None:
        self.store = store
        self.spool = Spool(spool) if spool is not None else None
        self._lock = threading.RLock()
        self._spooled = self.spool.count() if self.spool is not None else 0
        self._retry_at = 0.0
        self._warned = False

    def extend(self, quads: Iterable[ox.Quad]) -> None:
        """Insert quads (``INSERT DATA``, one request per :data:`REQUEST_QUADS`)."""
        chunk: list[ox.Quad] = []
        for quad in quads:
            chunk.append(quad)
            if len(chunk) >= REQUEST_QUADS:
                self._send(insert_operation(chunk))
                chunk = []
        if chunk:
            self._send(insert_operation(chunk))

    def replace(
        self, subject: ox.NamedNode, predicate: ox.NamedNode, graph: ox.NamedNode, objects: Iterable[Term] = ()
    ) -> None:
        """``DELETE WHERE`` and ``INSERT DATA`` in one request: one transaction, and one that can wait in the spool."""
        self._send(replace_operation(subject, predicate, graph, objects))

    def remove(self, quad: ox.Quad) -> None:
        """Delete one quad (``DELETE DATA``)."""
        self._send(delete_operation(quad))

    def update(self, sparql: str) -> None:
        """Run a SPARQL Update request, retried and spooled like every write."""
        self._send(sparql)

    @property
    def spooled(self) -> int:
        """Write requests waiting in the spool file."""
        return self._spooled

    def close(self) -> None:
        """Try once more to send what the spool holds; say where it stays if the endpoint is away."""
        with self._lock:
            if not self._spooled or self.spool is None:
                return
            self._retry_at = 0.0
            self._drain()
            if self._spooled:
                log.warning(
                    "cnnprov could not reach the SPARQL endpoint %s: %d requests of this run are kept "
                    "in '%s'. Send them when it answers again: cnnprov push --store %s %s",
                    self.store.url, self._spooled, self.spool.path, self.store.url, self.spool.path,
                )

    def _send(self, text: str) -> None:
        """One write request: to the endpoint if it answers, else (in order) to the spool."""
        with self._lock:
            if self._spooled and (time.monotonic() < self._retry_at or not self._drain()):
                self._spool(text)
                return
            try:
                self.store.post_update(text)
            except StoreError as error:
                if self.spool is None:
                    raise
                self._retry_at = time.monotonic() + self.store.location.retry_after_s
                self._spool(text, error)

    def _spool(self, text: str, error: BaseException | None = None) -> None:
        assert self.spool is not None  # only called with a spool
        self.spool.append(text)
        self._spooled += 1
        if not self._warned:
            self._warned = True
            log.warning(
                "cnnprov cannot write to the SPARQL endpoint %s (%s); records are kept in '%s' and "
                "sent when it answers again", self.store.url, error or "it did not answer", self.spool.path,
            )

    def _drain(self) -> bool:
        """Send the spool (one try per request); ``False`` if the endpoint still does not take it."""
        assert self.spool is not None
        timeout = min(self.store.location.timeout_s, _PROBE_TIMEOUT_S)
        try:
            self.spool.drain(lambda text: self.store.post_update(text, retries=0, timeout_s=timeout))
        except StoreError:
            self._retry_at = time.monotonic() + self.store.location.retry_after_s
            return False
        finally:
            self._spooled = self.spool.count()
        self._warned = False
        return True


class RemoteSession:
    """Runs recorded into a SPARQL endpoint: each run's writes spool to a file of its own.

    The endpoint serves reads itself, and holds nothing open: the session only carries the client.
    """

    def __init__(self, location: StoreLocation) -> None:
        self.location = location
        self.store = RemoteStore(location)

    @property
    def reader(self) -> RemoteStore:
        return self.store

    def target(self, run_id: str, spool: bool = True) -> RemoteTarget:
        """``run_id``'s writes; with ``spool``, those the endpoint does not take wait in the run's spool file."""
        return RemoteTarget(self.store, spool=default_spool_path(run_id) if spool else None)

    def close(self, wait: bool = False) -> None:
        """Nothing is held open."""

    def __enter__(self) -> RemoteSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _endpoints(url: str) -> tuple[str, str]:
    path = urllib.parse.urlsplit(url).path
    if path.endswith("/sparql"):
        return url, url
    if path.endswith("/query"):
        return url, url[: -len("query")] + "update"
    return url + "/query", url + "/update"


def _error_message(error: urllib.error.HTTPError) -> str:
    try:
        text = error.read().decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text[:500] or error.reason or ""


if TYPE_CHECKING:  # mypy checks that the endpoint's classes do what the protocols say

    def _satisfies(
        session: RemoteSession, target: RemoteTarget, reader: RemoteStore
    ) -> tuple[Session, WriteTarget, Reader]:
        return session, target, reader
