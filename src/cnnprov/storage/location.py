"""Where a store is, decided once: a directory or a SPARQL endpoint URL, with its options.

:meth:`StoreLocation.parse` is the only place that asks whether a store is remote. What it
returns opens a :class:`~cnnprov.storage.protocols.Session` (to write runs) or a
:class:`~cnnprov.storage.protocols.Reader` (to read), and everything above ``storage/`` uses
those without knowing which kind of store it has.

Example::

    from cnnprov.storage.location import StoreLocation

    shared = StoreLocation.parse("https://prov.example.org/sparql", headers={"Authorization": "Bearer …"})
    ProvLogger(store=shared)
    ProvStore(shared).runs()
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnprov.errors import StoreError

if TYPE_CHECKING:
    from cnnprov.storage.durable_notes import DurableMark
    from cnnprov.storage.protocols import Reader, Session

#: Environment variable that overrides the default store location.
STORE_ENV = "CNNPROV_STORE"
#: The store the logger writes to and the CLI reads from unless told otherwise.
DEFAULT_STORE = "provenance"
#: Environment variable: seconds a writer waits for another process to let go of an embedded store.
LOCK_WAIT_ENV = "CNNPROV_LOCK_WAIT_S"
#: Environment variable: seconds a reader waits for a held store to be served or let go of.
READ_WAIT_ENV = "CNNPROV_READ_WAIT_S"
#: Environment variable: seconds a run's writes wait before an endpoint that did not answer is tried again.
RETRY_AFTER_ENV = "CNNPROV_RETRY_AFTER_S"
#: How queries reach the union of the run graphs on an endpoint (see :class:`StoreLocation`).
UNION_MODES = ("auto", "oxigraph", "dataset", "native")


def _seconds(variable: str, default: float) -> float:
    try:
        return float(os.environ.get(variable) or default)
    except ValueError:
        raise StoreError(f"${variable} must be a number of seconds, not {os.environ[variable]!r}") from None


@dataclass(frozen=True)
class StoreLocation:
    """A store's place and how to reach it.

    Args:
        path: the directory of an embedded store (``None`` for an endpoint).
        url: the URL of a SPARQL 1.1 endpoint (``None`` for a directory).
        union: how queries reach the union of the run graphs on an endpoint: ``"auto"``
            (Oxigraph's ``union-default-graph`` on an Oxigraph server, else ``"dataset"``),
            ``"oxigraph"``, ``"dataset"`` (``default-graph-uri``/``named-graph-uri`` for every
            named graph) or ``"native"`` (the endpoint's default graph is the union).
        timeout_s: seconds one HTTP request may take.
        retries: further tries of a failed write, ``backoff_s``, twice that, … apart.
        backoff_s: the first wait between tries.
        retry_after_s: once writes spool, how long to wait before the endpoint is tried again
            (default ``$CNNPROV_RETRY_AFTER_S`` or 30).
        headers: HTTP headers sent with every request (e.g. ``Authorization``).
        lock_wait_s: how long a writer waits for another process to let go of an embedded
            store (default ``$CNNPROV_LOCK_WAIT_S`` or 5).
        read_wait_s: how long a reader waits for a held store to be served or let go of
            (default ``$CNNPROV_READ_WAIT_S`` or 2).
    """

    path: Path | None = None
    url: str | None = None
    union: str = "auto"
    timeout_s: float = 60.0
    retries: int = 3
    backoff_s: float = 0.5
    retry_after_s: float = field(default_factory=lambda: _seconds(RETRY_AFTER_ENV, 30.0))
    headers: tuple[tuple[str, str], ...] = ()
    lock_wait_s: float = field(default_factory=lambda: _seconds(LOCK_WAIT_ENV, 5.0))
    read_wait_s: float = field(default_factory=lambda: _seconds(READ_WAIT_ENV, 2.0))

    def __post_init__(self) -> None:
        if (self.path is None) == (self.url is None):
            raise StoreError("a store location is a directory or a SPARQL endpoint URL: give exactly one")
        if self.union not in UNION_MODES:
            raise StoreError(f"union must be one of {', '.join(UNION_MODES)}, not {self.union!r}")

    @classmethod
    def parse(
        cls,
        store: str | os.PathLike[str] | StoreLocation | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        **options: Any,
    ) -> StoreLocation:
        """The location ``store`` names: an ``http(s)://`` URL is an endpoint, anything else a directory.

        ``None`` or ``""`` is ``$CNNPROV_STORE`` if set, else ``./provenance``. ``options`` are
        the other fields (``union``, ``timeout_s``, ``retries``, …); given with a location, they
        replace its own.
        """
        if headers is not None:
            options["headers"] = tuple(headers.items())
        if isinstance(store, StoreLocation):
            return replace(store, **options) if options else store
        if isinstance(store, str) and store[:8].lower().startswith(("http://", "https://")):
            try:
                parts = urllib.parse.urlsplit(store)
                parts.port  # noqa: B018 - raises for a port that is no number
            except ValueError as error:
                raise StoreError(f"'{store}' is not a valid SPARQL endpoint URL ({error}): check the URL") from None
            if not parts.hostname:
                raise StoreError(f"'{store}' names no host: give a URL such as http://127.0.0.1:7878")
            return cls(url=store.rstrip("/"), **options)
        if store is None or store == "":
            store = os.environ.get(STORE_ENV) or DEFAULT_STORE
        return cls(path=Path(store), **options)

    @property
    def is_remote(self) -> bool:
        return self.url is not None

    def __str__(self) -> str:
        return self.url if self.url is not None else str(self.path)

    def __fspath__(self) -> str:
        if self.path is None:
            raise TypeError(f"{self.url} is a SPARQL endpoint, not a file system path")
        return os.fspath(self.path)

    def beside(self, suffix: str) -> str:
        """A directory beside an embedded store (``provenance-checkpoints``), or in the working
        directory for an endpoint (``cnnprov-checkpoints``)."""
        return os.fspath(self.path) + suffix if self.path is not None else "cnnprov" + suffix

    def prepare(self) -> None:
        """Check now that a run can be recorded here (an embedded store's directory can be created)."""
        if self.path is not None:
            from cnnprov.storage.local import prepare_store_directory

            prepare_store_directory(self.path)

    def open_session(self, serve_reads: bool = True, lazy: bool = False) -> Session:
        """Hold the store for writing runs until the session is closed.

        An embedded store is opened (waiting up to ``lock_wait_s`` for another process) and,
        with ``serve_reads``, served read-only on 127.0.0.1 to other processes meanwhile.
        ``lazy`` opens it on first use instead (a run's writer thread does, while training
        sets up); readers in this process wait for that open rather than race it. A store this
        process holds open already is shared: the session is a hold on the open one.
        """
        if self.path is not None:
            from cnnprov.storage.local import open_local_session

            return open_local_session(self, serve_reads=serve_reads, lazy=lazy)
        from cnnprov.storage.remote import RemoteSession

        return RemoteSession(self)

    def open_reader(self) -> Reader:
        """A read handle: the store itself, the training process that holds it, or the endpoint."""
        if self.path is not None:
            from cnnprov.storage.local import open_local_reader

            return open_local_reader(self)
        from cnnprov.storage.remote import RemoteStore

        return RemoteStore(self)

    def note_durable(self, mark: DurableMark) -> None:
        """Note beside an embedded store that it holds ``mark``'s records durably, for later opens to
        compare (a damaged write-ahead log drops records silently); an endpoint keeps its own log."""
        if self.path is not None:
            from cnnprov.storage.durable_notes import note

            note(self.path, mark)

    def held_by_another_process(self) -> bool:
        """Whether another live process holds this (embedded) store: opening it would wait, then fail."""
        if self.path is None:
            return False
        from cnnprov.storage.advertisement import read_holder

        holder = read_holder(self.path)
        return holder is not None and holder.alive is not False and not holder.is_this_process
