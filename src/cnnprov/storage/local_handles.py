"""Handles on an open embedded store: a run's :class:`LocalTarget`, a :class:`LocalReader`, and a
:class:`SharedSession` (another user's hold on a session of this process)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyoxigraph as ox

from cnnprov.errors import StoreError
from cnnprov.rdf.sparql import Term, replace_operation
from cnnprov.storage.durable_notes import flush
from cnnprov.storage.spool import Spool

if TYPE_CHECKING:
    from cnnprov.storage.local import LocalSession

#: After this many quads RocksDB writes its in-memory tables to disk. As Oxigraph configures it,
#: it lets them grow to ~2 GiB before it does so itself; this often keeps a million-step run's
#: memory flat (BENCHMARKS.md). A session counts across its runs.
MEMTABLE_QUADS = 65_536


class Written:
    """Quads a session's targets wrote since the store's memory tables were last written to disk,
    and how often they were written before the session's end."""

    unflushed = 0
    flushes = 0


class LocalTarget:
    """A run's writes to the open store: each call one transaction (writes release the GIL).

    ``reopen`` (its session's) gives a fresh handle after a failed write; ``spill_path`` is where
    records it never took are kept when the run ends (:mod:`cnnprov.storage.write_failures`).
    """

    def __init__(
        self,
        store: ox.Store | None,
        reopen: Callable[[], ox.Store | None] | None = None,
        where: str = "",
        directory: Path | None = None,
        written: Written | None = None,
    ) -> None:
        self.store = store
        self.reopen = reopen
        self.where = where
        self.directory = directory  # an embedded store's: its notes are pruned after a flush
        self.spill_path: Path | None = None
        # quads written since RocksDB last wrote its memory tables to disk: counted across the
        # session's runs (a run of a sweep writes far fewer than the flush's worth)
        self._written = written if written is not None else Written()

    def __repr__(self) -> str:
        return f"LocalTarget({self.where!r})"

    def recover(self) -> None:
        """A write failed: open the store again (RocksDB keeps a handle in error after ENOSPC)."""
        if self.reopen is not None:
            store = self.reopen()
            if store is not None:
                self.store = store
                self._written.unflushed = 0

    def spill(self, texts: list[str]) -> Path | None:
        """Keep SPARQL Update requests the store did not take in the spill file; its path.

        Beside the store first; where that disk is full too, in the system's temporary directory.
        A spill file is written whole or not at all, so ``cnnprov push`` never meets half an entry.
        """
        if self.spill_path is None:
            return None
        fallback = Path(tempfile.gettempdir()) / "cnnprov-spill" / self.spill_path.name
        error: OSError | None = None
        for path in (self.spill_path, fallback):
            try:
                Spool(path).append_all(texts)
                return path
            except OSError as refused:
                error = refused
        assert error is not None
        raise error

    def _open(self) -> ox.Store:
        if self.store is None:
            raise StoreError("the provenance store's session is closed: nothing more can be written to it")
        return self.store

    def extend(self, quads: Iterable[ox.Quad]) -> None:
        store = self._open()
        batch = quads if isinstance(quads, list) else list(quads)
        store.extend(batch)
        written = self._written
        written.unflushed += len(batch)
        if written.unflushed >= MEMTABLE_QUADS:
            flush(store, self.directory)  # GIL released too; a sweep's notes of runs now in table files go
            written.unflushed = 0
            written.flushes += 1

    def replace(
        self, subject: ox.NamedNode, predicate: ox.NamedNode, graph: ox.NamedNode, objects: Iterable[Term] = ()
    ) -> None:
        self._open().update(replace_operation(subject, predicate, graph, objects))

    def update(self, sparql: str) -> None:
        self._open().update(sparql)

    def close(self) -> None:
        """The run is over; the store stays open for its session."""


class LocalReader:
    """Reads of an open embedded store, as a :class:`~cnnprov.storage.protocols.Reader`."""

    def __init__(self, store: ox.Store, serving_run: str | None = None, owned: bool = False) -> None:
        self._store: ox.Store | None = store
        self._serving_run = serving_run
        self._owned = owned

    def __repr__(self) -> str:
        return f"LocalReader({self._store!r})"

    def _open(self) -> ox.Store:
        if self._store is None:
            raise StoreError("this read handle was closed")
        return self._store

    def query(
        self,
        query: str,
        *,
        use_default_graph_as_union: bool = False,
        substitutions: Mapping[ox.Variable, Term] | None = None,
    ) -> Any:
        return self._open().query(
            query,
            use_default_graph_as_union=use_default_graph_as_union,
            substitutions=dict(substitutions or {}) or None,
        )

    def quads_for_pattern(self, subject: Any, predicate: Any, object: Any, graph_name: Any = None) -> Iterator[ox.Quad]:
        return self._open().quads_for_pattern(subject, predicate, object, graph_name)

    def rdflib_store(self) -> Any:
        from oxrdflib import OxigraphStore

        return OxigraphStore(store=self._open())

    def serving_run_id(self) -> str | None:
        return self._serving_run

    def close(self) -> None:
        if self._owned:
            self._store = None  # the last reference: RocksDB lets go of the store


class SharedSession:
    """Another user's hold on a :class:`LocalSession` of this process: two loggers of one Trainer,
    or two recorders, on one store. Closing it lets go of the store only if it is the last hold."""

    def __init__(self, session: LocalSession) -> None:
        self.session = session
        self.location = session.location
        self._closed = False

    def __repr__(self) -> str:
        return f"SharedSession({str(self.session.path)!r})"

    @property
    def reader(self) -> LocalReader:
        return self.session.reader

    def target(self, run_id: str, spool: bool = True) -> LocalTarget:
        return self.session.target(run_id, spool)

    def close(self, wait: bool = False) -> None:
        if not self._closed:
            self._closed = True
            self.session._leave(wait)

    def __enter__(self) -> SharedSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
