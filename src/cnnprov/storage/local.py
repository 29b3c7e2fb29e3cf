"""The embedded Oxigraph store: opening it, holding it for runs, reading it, and clear errors.

A store is one directory (RocksDB underneath) shared by every run. RocksDB lets one process
open it for writing at a time. A :class:`LocalSession` holds it for one run, or for all the
runs of a sweep, serves reads of it to other processes meanwhile
(:mod:`cnnprov.storage.endpoint`) and advertises itself in the directory
(:mod:`cnnprov.storage.advertisement`). Closing a session has RocksDB write its memory
tables to disk (so that the next open does not replay its log) and lets go of the store, in
the background; anything else in this process that opens the store waits for that.

A reader (:func:`open_local_reader`) in the process that holds the store reads the open
store; elsewhere it opens the store for the length of a read when nobody holds it, or asks
the holder's read endpoint.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyoxigraph as ox

from cnnprov.errors import StoreError, StoreLockedError, StoreOpenInThisProcessError
from cnnprov.storage.advertisement import advertise, read_holder, withdraw
from cnnprov.storage.crashes import record_crashed_runs
from cnnprov.storage.durable_notes import check, flush
from cnnprov.storage.housekeeping import tidy
from cnnprov.storage.local_handles import LocalReader, LocalTarget, SharedSession, Written
from cnnprov.storage.location import StoreLocation
from cnnprov.storage.opening import (
    check_readable,
    in_this_process_message,
    is_locked,
    locked_message,
    open_read_only,
    open_store,
    prepare_store_directory,
)
from cnnprov.storage.protocols import Reader, Session, WriteTarget

log = logging.getLogger(__name__)

#: How long an open, or the interpreter's exit, waits for this process to let go of a store.
RELEASE_WAIT_S = 60.0


# -- sessions ------------------------------------------------------------------------
#: Sessions of this process by store directory (resolved): open ones are read directly,
#: closing ones are waited for.
_SESSIONS: dict[str, LocalSession] = {}
_SESSIONS_LOCK = threading.Lock()


def _key(path: Path) -> str:
    return os.path.realpath(path)


class LocalSession:
    """An embedded store held open for writing runs (see the module docstring).

    Use it for a sweep: every run recorded with ``store=session`` shares the open store,
    which is let go of once, when the session closes::

        with StoreLocation.parse("provenance").open_session() as session:
            for config in grid:
                trainer = L.Trainer(logger=ProvLogger(store=session))
                ...
    """

    def __init__(self, location: StoreLocation, serve_reads: bool = True, lazy: bool = False) -> None:
        assert location.path is not None
        self.location = location
        self.path = location.path
        prepare_store_directory(self.path)
        self.run_id = ""
        self._serve_reads = serve_reads
        self._store: ox.Store | None = None
        self._endpoint: Any = None
        self._open_lock = threading.Lock()
        self._open_error: BaseException | None = None
        self._released = threading.Event()
        self._closing = False
        self._users = 1  # this object's opener, and each share (open_local_session)
        self._reopened = False  # its handle was let go of after a failed write (see _reopen)
        self._shutting = False
        self._targets: weakref.WeakSet[LocalTarget] = weakref.WeakSet()  # one a run, sharing the store
        self._written = Written()  # shared by its targets
        self._opener_closed = False
        with _SESSIONS_LOCK:
            other = _SESSIONS.get(_key(self.path))
            if other is not None and not other._closing:
                raise StoreOpenInThisProcessError(in_this_process_message(self.path))
            self._predecessor = other  # a session of this process still letting go of the store
            _SESSIONS[_key(self.path)] = self
        if not lazy:
            self.store  # noqa: B018 - opens it now

    @property
    def store(self) -> ox.Store:
        """The open store; a lazy session opens it on first use (any thread; the others wait)."""
        with self._open_lock:
            if self._store is not None:
                return self._store
            if self._open_error is not None:
                raise self._open_error
            if self._reopened:  # a reopen after a failed write has not succeeded yet: try again
                store = self._reopen_locked()
                if store is None:
                    raise StoreError(f"the provenance store '{self.path}' cannot be opened again yet")
                return store
            try:
                self._open()
            except BaseException as error:
                self._open_error = error
                self._forget()
                raise
            assert self._store is not None
            return self._store

    def _open(self) -> None:
        if self._closing:
            raise StoreError(f"the session of the provenance store '{self.path}' is closed")
        predecessor, self._predecessor = self._predecessor, None
        if predecessor is not None:
            predecessor.wait_released()
        self._set_store(_open_waiting(self.path, self.location.lock_wait_s, opening=self))
        assert self._store is not None
        check(self._store, self.path)  # a damaged log lost records a killed writer had stored: say so
        record_crashed_runs(self._store)  # what a killed writer could not: it held the store before us
        try:
            if self._serve_reads:
                from cnnprov.storage.endpoint import ReadEndpoint

                self._endpoint = ReadEndpoint(self._store)
                self._endpoint.start()
            self._advertise()
        except BaseException:
            self._endpoint = None
            self._set_store(None)
            raise

    def __repr__(self) -> str:
        return f"LocalSession({str(self.path)!r})"

    def __enter__(self) -> LocalSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def reader(self) -> LocalReader:
        return LocalReader(self.store, serving_run=self.run_id or None)

    def target(self, run_id: str, spool: bool = True) -> LocalTarget:
        """Where ``run_id``'s records go (a target of its own, on the session's store); the run is
        advertised as the one the store records."""
        if not self._reopened:
            self.store  # noqa: B018 - open, or raise why it cannot be
        # (after a failed write the store may not reopen yet: the run's records wait, or are spilled)
        target = LocalTarget(
            self._store, reopen=self._reopen, where=str(self.path), directory=self.path, written=self._written
        )
        # beside the store, named after the run: records it still refused when the run ended
        target.spill_path = spill_path(self.path, run_id) if spool else None
        self._targets.add(target)
        if run_id != self.run_id:
            self.run_id = run_id
            self._advertise()
        return target

    def _reopen(self) -> ox.Store | None:
        """After a failed write: let go of the store's handle and open it again (``None`` if it cannot
        be yet). RocksDB keeps a handle in error after ENOSPC, while a fresh one writes."""
        with self._open_lock:
            return self._reopen_locked()

    def _reopen_locked(self) -> ox.Store | None:
        if self._closing:
            return None
        endpoint = self._endpoint
        if endpoint is not None:
            endpoint.serve(None)  # answers 503 meanwhile
        self._reopened = True
        self._set_store(None)  # the last references: RocksDB lets go of it
        try:
            try:
                store = open_store(self.path, 0)
            except StoreOpenInThisProcessError:  # the old handle lives on in a reference cycle: collect it
                gc.collect()
                store = open_store(self.path, 0)
        except StoreError as error:
            log.debug("cnnprov could not reopen the provenance store %s: %s", self.path, error)
            return None
        self._set_store(store)
        if endpoint is not None:
            endpoint.serve(store)
        return store

    def _set_store(self, store: ox.Store | None) -> None:
        """The session's handle, and every run's target on it."""
        self._store = store
        for target in list(self._targets):
            target.store = store

    def _advertise(self) -> None:
        endpoint = self._endpoint
        url, token = (f"{endpoint.url}/sparql", endpoint.token) if endpoint else ("", "")
        advertise(self.path, self.run_id, url, token)

    def close(self, wait: bool = False) -> None:
        """Stop serving, then write RocksDB's memory tables and let go of the store (in the
        background unless ``wait``; opens of this store in this process wait for it). Safe to call twice.

        While shares of the session (other runs of this process) are open, the store stays open
        until the last of them closes too.
        """
        if not self._opener_closed:
            self._opener_closed = True
            self._leave(wait)
        elif wait and self._closing:
            self._released.wait(RELEASE_WAIT_S)

    def _leave(self, wait: bool) -> None:
        with _SESSIONS_LOCK:
            self._users -= 1
            last = self._users <= 0
            if last:
                self._closing = True  # under the lock: no new share takes a session that is shutting
        if last:
            self._shut(wait)

    def _shut(self, wait: bool) -> None:
        if self._shutting:
            if wait:
                self._released.wait(RELEASE_WAIT_S)
            return
        self._shutting = self._closing = True
        endpoint, self._endpoint = self._endpoint, None
        if endpoint is not None:
            endpoint.stop(wait=wait)
        if wait:
            self._let_go()
            return
        try:
            threading.Thread(target=self._let_go, name="cnnprov-release", daemon=True).start()
        except RuntimeError:  # no new threads (the interpreter is exiting)
            self._let_go()

    def wait_released(self) -> None:
        self._released.wait(RELEASE_WAIT_S)

    def _let_go(self) -> None:
        try:
            with self._open_lock:
                store = self._store
                self._set_store(None)
            if store is not None:
                try:
                    # GIL released; the data is durable already (in RocksDB's log), and its notes go
                    flush(store, self.path)
                except Exception as error:  # the next open replays the log instead
                    log.warning("cnnprov could not write the provenance store's memory tables: %s", error)
                del store  # the last reference: RocksDB closes and lets go of its lock
                withdraw(self.path)  # first: readers elsewhere open the store themselves from now on
                tidy(self.path, reopen=self._written.flushes > 0)
        finally:
            self._forget()
            self._released.set()

    def _forget(self) -> None:
        with _SESSIONS_LOCK:
            if _SESSIONS.get(_key(self.path)) is self:
                del _SESSIONS[_key(self.path)]


def open_local_session(location: StoreLocation, serve_reads: bool = True, lazy: bool = False) -> Session:
    """A session of the embedded store: a share of this process's open one, or a new one."""
    assert location.path is not None
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(_key(location.path))
        if session is not None and not session._closing:
            session._users += 1
            return SharedSession(session)
    return LocalSession(location, serve_reads=serve_reads, lazy=lazy)


def spill_path(store: Path, run_id: str) -> Path:
    """Where a run's records that its store never took are kept: ``<store>-spill/<run id>.ru``."""
    return store.with_name(store.name + "-spill") / f"{run_id}.ru"


def _open_waiting(target: Path, wait_s: float, opening: LocalSession | None = None) -> ox.Store:
    """:func:`open_store`, after this process's own session (if any but ``opening``) let go of it."""
    session = _session(target)
    if session is not None and session is not opening:
        if not session._closing:
            raise StoreOpenInThisProcessError(in_this_process_message(target))
        session.wait_released()
    return open_store(target, wait_s)


def _session(path: Path) -> LocalSession | None:
    with _SESSIONS_LOCK:
        return _SESSIONS.get(_key(path))


def wait_released(path: str | os.PathLike[str]) -> None:
    """Wait until this process has let go of the store at ``path`` (a closing session does so in
    the background). cnnprov's own opens wait by themselves; call this before opening the store
    with pyoxigraph or oxrdflib directly right after a run in the same process."""
    session = _session(Path(path))
    if session is not None and session._closing:
        session.wait_released()


@atexit.register
def _close_all() -> None:
    # sessions nobody closed, and those closing on daemon threads: let go before the interpreter ends
    for session in list(_SESSIONS.values()):
        session._shut(wait=True)  # shares nobody closed included: the store is let go of properly


def open_local_reader(location: StoreLocation) -> Any:
    """How to read an embedded store: this process's open session, the store opened for the
    read, or the read endpoint of the process that holds it. Waits up to ``read_wait_s`` for a
    holder that serves nothing yet (a run that has just opened the store)."""
    assert location.path is not None
    path = location.path
    deadline = time.monotonic() + location.read_wait_s
    while True:
        session = _session(path)
        if session is not None and not session._closing:
            try:
                # before any check of the directory: a lazy session may not have created the store yet
                return session.reader  # a lazy session opens now, if its writer thread has not yet
            except StoreError:
                pass  # it cannot open the store: read as if it were not there
        elif session is not None:
            session.wait_released()  # this process is letting go of it: it holds the lock until then
        check_readable(path)
        locked = is_locked(path)
        if locked is False:  # nobody writes it: read it read-only (no lock, no files left)
            return LocalReader(_checked(open_read_only(path), path), owned=True)
        if locked is None:  # cannot be told here: an open for writing says, by failing if it is held
            try:
                return LocalReader(_checked(_open_waiting(path, 0), path), owned=True)
            except StoreOpenInThisProcessError:
                raise
            except StoreLockedError:
                pass
        holder = read_holder(path)
        if holder is not None and holder.url and holder.alive is not False:
            from cnnprov.storage.remote import RemoteStore

            headers = (("Authorization", f"Bearer {holder.token}"),) if holder.token else ()
            endpoint = StoreLocation(url=holder.url, union="native", headers=headers, retries=0)
            return RemoteStore(endpoint, serving_run=holder.run_id or None)
        if time.monotonic() >= deadline:  # a holder that serves nothing (or not yet)
            raise StoreLockedError(locked_message(path))
        time.sleep(0.05)


def open_existing_store(location: StoreLocation) -> ox.Store:
    """An existing embedded store, opened for writing to be served or copied (``cnnprov serve``,
    ``cnnprov compact``): waits up to ``read_wait_s`` for a run that has just let go of it, then
    raises :class:`StoreLockedError`."""
    assert location.path is not None
    check_readable(location.path)
    return _checked(_open_waiting(location.path, location.read_wait_s), location.path)


def _checked(store: ox.Store, path: Path) -> ox.Store:
    """``store``, after its notes were compared with it (:mod:`cnnprov.storage.durable_notes`)."""
    check(store, path)
    return store


if TYPE_CHECKING:  # mypy checks that the embedded store's classes do what the protocols say

    def _satisfies(
        session: LocalSession, shared: SharedSession, target: LocalTarget, reader: LocalReader
    ) -> tuple[Session, Session, WriteTarget, Reader]:
        return session, shared, target, reader
