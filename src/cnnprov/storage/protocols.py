"""What a store can do, said once: reading it, writing a run into it, holding it for runs.

An embedded Oxigraph store and a SPARQL 1.1 endpoint both satisfy these, so the recorder,
the writer, :class:`~cnnprov.ProvStore`, sweeps and validation never ask which kind they have.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pyoxigraph as ox

from cnnprov.rdf.sparql import Term

if TYPE_CHECKING:
    from cnnprov.storage.location import StoreLocation


class ReadStore(Protocol):
    """A store to ask: SPARQL queries over the union of its run graphs, and quads by pattern.

    The signatures are pyoxigraph's, so an open ``pyoxigraph.Store`` is one too.
    """

    def query(
        self,
        query: str,
        *,
        use_default_graph_as_union: bool = False,
        substitutions: Mapping[ox.Variable, Term] | None = None,
    ) -> Any:  # QuerySolutions, QueryBoolean or QueryTriples, as pyoxigraph returns them
        ...

    def quads_for_pattern(
        self,
        subject: Any,
        predicate: Any,
        object: Any,
        graph_name: Any = None,
    ) -> Iterator[ox.Quad]: ...


class Reader(ReadStore, Protocol):
    """A read handle: a :class:`ReadStore` that also gives rdflib a view of itself, and can be let go of."""

    def rdflib_store(self) -> Any:
        """An rdflib ``Store`` over the same data (its default graph the union of the run graphs)."""
        ...

    def serving_run_id(self) -> str | None:
        """The run a live training process records into this store, if one does."""
        ...

    def close(self) -> None: ...


class WriteTarget(Protocol):
    """Where a run's writer thread puts its records. Each call is one transaction."""

    def extend(self, quads: Iterable[ox.Quad]) -> None: ...

    def replace(
        self, subject: ox.NamedNode, predicate: ox.NamedNode, graph: ox.NamedNode, objects: Iterable[Term] = ()
    ) -> None:
        """Replace every value of ``predicate`` on ``subject`` in ``graph``, atomically."""
        ...

    def update(self, sparql: str) -> None: ...

    def close(self) -> None:
        """The run is over: say where unsent records wait, if any (the session stays open)."""
        ...


@runtime_checkable
class Session(Protocol):
    """A store held open for writing runs: one run's, or a whole sweep's.

    Opened by :meth:`~cnnprov.storage.location.StoreLocation.open_session` (or
    :func:`cnnprov.open_session`); while it is open the store serves reads to other processes
    (an embedded one through its read endpoint). A context manager: leaving it closes it.
    """

    location: StoreLocation

    @property
    def reader(self) -> ReadStore:
        """Reads of what the session's runs recorded (a resumed run reads its record)."""
        ...

    def target(self, run_id: str, spool: bool = True) -> WriteTarget:
        """Where ``run_id``'s records go; the run is advertised as the store's writer.

        ``spool=False``: a write an endpoint does not take raises instead of waiting in a spool file.
        """
        ...

    def close(self, wait: bool = False) -> None:
        """Let go of the store (in the background unless ``wait``). Safe to call twice."""
        ...

    def __enter__(self) -> Session: ...

    def __exit__(self, *exc_info: object) -> None: ...
