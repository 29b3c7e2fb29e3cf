"""Opening the embedded Oxigraph store: where it lives, who holds it, and clear errors.

A store is one directory (RocksDB underneath) shared by every run. RocksDB lets
one process open it for writing at a time; a training process holds it for the
length of a run, and readers open it briefly. While a writer holds the lock,
the directory advertises it in ``cnnprov-writer.json`` so the error a second
process sees can say who holds it. A process killed while writing leaves that
file behind; :func:`writer_info` and :func:`is_process_alive` tell such a stale
advertisement (and a run left "running" by a killed process) from a live one.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

from pyoxigraph import Store

#: Environment variable that overrides the default store location.
STORE_ENV = "CNNPROV_STORE"
#: The store the logger writes to and the CLI reads from unless told otherwise.
DEFAULT_STORE = "provenance"
_WRITER_FILE = "cnnprov-writer.json"
_ROCKSDB_MARKER = "CURRENT"

log = logging.getLogger(__name__)


class StoreError(OSError):
    """A provenance store cannot be opened; the message says why and what to do."""


class StoreNotFoundError(StoreError):
    pass


class StoreLockedError(StoreError):
    pass


class StoreOpenInThisProcessError(StoreLockedError):
    """This process holds the store already (a run not yet finished, an rdflib dataset not closed)."""


def default_store_path() -> Path:
    """``$CNNPROV_STORE`` if set, else ``./provenance``."""
    return Path(os.environ.get(STORE_ENV) or DEFAULT_STORE)


def is_remote(store: object) -> bool:
    """Whether ``store`` names a SPARQL endpoint (an ``http://`` or ``https://`` URL), not a directory."""
    return isinstance(store, str) and store[:8].lower().startswith(("http://", "https://"))


def resolve_store_path(path: str | os.PathLike | None) -> Path:
    """The store directory; a SPARQL endpoint URL (see :mod:`cnnprov.storage.remote`) comes back unchanged, a ``str``."""
    if is_remote(path):
        return path  # type: ignore[return-value]
    return Path(path) if path not in (None, "") else default_store_path()


def is_store(path: Path) -> bool:
    return (path / _ROCKSDB_MARKER).is_file()


def open_for_writing(path: str | os.PathLike | None, run_id: str = "", wait_s: float = 5.0) -> Store:
    """Open (creating if needed) a store for writing and advertise this process as its writer.

    Waits up to ``wait_s`` seconds for a short-lived reader to let go of the lock.
    """
    target = prepare_store_directory(path)
    store = _open_waiting(target, wait_s)
    advertise_writer(target, run_id)
    return store


def prepare_store_directory(path: str | os.PathLike | None) -> Path:
    """Check that ``path`` can be a store and create its directory; the checks of opening that need no lock."""
    target = resolve_store_path(path)
    _check_writable_location(target)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StoreError(
            f"cannot create the provenance store directory '{target}': {error.strerror or error}. "
            f"Choose a directory you can write to"
        ) from None
    return target


def advertise_writer(path: str | os.PathLike | None, run_id: str) -> None:
    """Name this process (and the run it records) as the writer of the store it holds open."""
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "run_id": run_id,
        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (resolve_store_path(path) / _WRITER_FILE).write_text(json.dumps(info))


def writer_info(path: str | os.PathLike | None) -> dict | None:
    """The writer a store advertises, or ``None`` when none does.

    A dict with ``pid``, ``host``, ``run_id``, ``since`` (when it opened the
    store) and ``alive``: ``True`` while that process runs, ``False`` when it has
    ended without releasing the store (it was killed), ``None`` when it runs on
    another host and cannot be checked from here.

    Example::

        info = writer_info("provenance")
        if info and info["alive"] is False:
            print(f"run {info['run_id']} was interrupted: its process {info['pid']} is gone")
    """
    info = _read_writer(resolve_store_path(path))
    if not isinstance(info, dict):
        return None
    info["alive"] = is_process_alive(info.get("host"), info.get("pid"))
    return info


def held_by_another_process(path: str | os.PathLike | None) -> bool:
    """Whether the store advertises a writer that is another process, alive or on another host."""
    info = writer_info(path)
    if info is None or info["alive"] is False:
        return False
    return (info.get("pid"), info.get("host")) != (os.getpid(), socket.gethostname())


def is_process_alive(host: str | None, pid: int | None) -> bool | None:
    """Whether process ``pid`` on ``host`` still runs.

    ``None`` when ``host`` is another machine (it cannot be checked from here).
    Use it with a run's recorded ``cnnprov:hostname`` and ``cnnprov:processId``
    to tell a run that is still training from one whose process was killed
    (both show the status "running"). A process id the system has since given
    to another process reads as alive: the answer errs on the side of "running".
    """
    if host is None or pid is None:
        return None
    if host != socket.gethostname():
        return None
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, but belongs to another user
        return True
    except OSError:
        return False
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """An ended child whose parent has not collected it yet (Linux ``/proc``; elsewhere False)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]


def release_writer(path: str | os.PathLike | None) -> None:
    """Remove this process's writer advertisement (call after dropping the store)."""
    marker = resolve_store_path(path) / _WRITER_FILE
    info = _read_writer(marker.parent)
    if info and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
        marker.unlink(missing_ok=True)


def open_for_reading(path: str | os.PathLike | None, wait_s: float = 2.0) -> Store:
    """Open an existing store to read it.

    The store is opened read-write, which is only possible while no training
    process writes to it; that makes what it reads well defined.
    """
    target = resolve_store_path(path)
    if not target.exists():
        raise StoreNotFoundError(
            f"no provenance store at '{target}': train with ProvLogger(store='{target}') "
            f"or pass --store with the directory a run wrote to"
        )
    if not target.is_dir() or not is_store(target):
        raise StoreNotFoundError(
            f"'{target}' is not a provenance store (expected a directory written by cnnprov); "
            f"pass --store with the directory a run wrote to"
        )
    return _open_waiting(target, wait_s)


#: How long an open, or the interpreter's exit, waits for this process to let go of a store.
RELEASE_WAIT_S = 60.0
#: How long a store stays open after a run, for the next run of the same process (a sweep).
#: Letting go of it costs a flush of RocksDB's memory tables (~0.3 s on a store of 1,000 runs)
#: and opening it again ~20 ms; a run that starts within this time takes it as it is.
KEEP_OPEN_S = 1.0


class KeptStore:
    """A store a finished run keeps open for the next run of this process, for :data:`KEEP_OPEN_S`.

    The writer thread hands it over with :meth:`hold` after its last write; a new
    run takes it with :func:`open_for_run`; anything else that opens the store
    in this process (a reader, :func:`wait_released`, the interpreter's exit)
    has it let go of at once. Letting go writes RocksDB's memory tables to disk
    first, so that the next open does not replay its log.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(os.path.realpath(path))  # the working directory may change while it is kept
        self.key = str(self.path)
        self.store: Store | None = None
        self.unflushed = 0  # quads written since RocksDB last wrote its memory tables to disk
        self.handed = threading.Event()  # the writer thread has handed the store over (or had none)
        self.released = threading.Event()  # let go of, or taken by a new run
        self._lock = threading.Lock()
        self._holding = False  # from the hand-over until it is taken or let go of
        self._timer: threading.Timer | None = None

    def hold(self, store: Store | None, unflushed: int) -> None:
        """Writer thread: keep ``store`` open until a new run takes it or :data:`KEEP_OPEN_S` pass."""
        timer_failed = False
        try:
            with self._lock:
                self.store, self.unflushed, self._holding = store, unflushed, store is not None
                if store is not None:
                    self._timer = threading.Timer(KEEP_OPEN_S, self.let_go)
                    self._timer.daemon = True
                    self._timer.start()
        except RuntimeError:  # no new threads (the interpreter is exiting): let go of it now
            timer_failed = True
        finally:
            self.handed.set()
        if store is None:  # the writer had no store (it could not open one): nothing to keep
            self._done()
        elif timer_failed:
            self.let_go()

    def _claim(self) -> Store | None:
        """The held store, now no longer held; ``None`` if another thread claimed it first."""
        self.handed.wait(RELEASE_WAIT_S)
        with self._lock:
            if not self._holding:
                return None
            store, self.store, self._holding = self.store, None, False
            if self._timer is not None:
                self._timer.cancel()
            return store

    def take(self) -> tuple[Store, int] | None:
        """The store and its unflushed quad count, for a new run; ``None`` if it was let go of."""
        store = self._claim()
        if store is None:
            return None
        self._done()
        return store, self.unflushed

    def let_go(self) -> None:
        """Write RocksDB's memory tables to disk, drop the store and its writer advertisement.

        Returns at once if another thread takes or lets go of it; :attr:`released` says when that is done.
        """
        store = self._claim()
        if store is None:
            return
        try:
            flush_memory_tables(store)
            del store  # the last reference: RocksDB closes and lets go of its lock
            release_writer(self.path)
        finally:
            self._done()

    def _done(self) -> None:
        _forget_kept(self)
        self.released.set()


def flush_memory_tables(store: Store) -> None:
    """Have RocksDB write its memory tables to disk, so that the next open need not replay its log.

    The data is durable already (in RocksDB's log): a failure is logged, not raised. GIL released.
    """
    try:
        store.flush()
    except Exception as error:  # the next open replays the log instead
        log.warning("cnnprov could not flush the provenance store's memory tables: %s", error)


#: Stores finished runs of this process keep open, by directory (see KeptStore).
_KEPT: dict[str, KeptStore] = {}
_KEPT_LOCK = threading.Lock()


def _key(path: str | os.PathLike | None) -> str:
    return os.path.realpath(resolve_store_path(path))


def keep_open(path: str | os.PathLike | None) -> KeptStore:
    """Register that a finishing run hands its store over to be kept open; give the result's
    :meth:`~KeptStore.hold` to the writer thread. Opens in this process wait for the hand-over."""
    kept = KeptStore(resolve_store_path(path))
    with _KEPT_LOCK:
        _KEPT[kept.key] = kept
    return kept


def _forget_kept(kept: KeptStore) -> None:
    with _KEPT_LOCK:
        if _KEPT.get(kept.key) is kept:
            del _KEPT[kept.key]


def _kept(path: str | os.PathLike | None) -> KeptStore | None:
    with _KEPT_LOCK:
        return _KEPT.get(_key(path))


def open_for_run(path: str | os.PathLike | None, run_id: str = "", wait_s: float = 5.0) -> tuple[Store, int]:
    """:func:`open_for_writing` for a run: takes the store a run of this process keeps open, if one does.

    Returns the store and how many quads were written to it since RocksDB last
    wrote its memory tables to disk (0 for a store just opened).
    """
    kept = _kept(path)
    taken = kept.take() if kept is not None else None
    if taken is None:
        return open_for_writing(path, run_id=run_id, wait_s=wait_s), 0
    advertise_writer(path, run_id)
    return taken


def wait_released(path: str | os.PathLike | None) -> None:
    """Wait until this process has let go of the store at ``path`` (a run closes it in the background,
    and keeps it open for a moment for the next run of the process).

    cnnprov's own reads and writes wait by themselves; call this before opening
    the store with pyoxigraph or oxrdflib directly right after a run in the same process.
    """
    kept = _kept(path)
    if kept is not None:
        kept.let_go()  # returns at once if another thread takes or lets go of it: wait for that
        kept.released.wait(RELEASE_WAIT_S)


@atexit.register
def _wait_all_released() -> None:
    # the writer threads are daemons: let them hand over and the stores go before the interpreter ends
    for kept in list(_KEPT.values()):
        kept.let_go()
        kept.released.wait(RELEASE_WAIT_S)


def _open_waiting(target: Path, wait_s: float) -> Store:
    wait_released(target)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return Store(str(target))
        except OSError as error:
            if not _is_lock_error(error):
                raise StoreError(f"cannot open the provenance store at '{target}': {error}") from error
            if "current process" in str(error):
                raise StoreOpenInThisProcessError(
                    f"this process already has the provenance store '{target}' open (a ProvLogger "
                    f"whose run has not finished, or an rdflib dataset from ProvStore.dataset() not "
                    f"yet closed): close it first, or read through the same ProvStore inside "
                    f"`with ProvStore(...) as store:`"
                ) from None
            if time.monotonic() >= deadline:
                raise StoreLockedError(_locked_message(target)) from None
            time.sleep(0.05)


def _is_lock_error(error: OSError) -> bool:
    text = str(error)
    return "LOCK" in text and ("lock" in text.lower())


def _locked_message(target: Path) -> str:
    info = writer_info(target)
    if info and info["alive"] is not False:
        holder = (
            f"process {info.get('pid')} on {info.get('host')}"
            + (f" (run {info['run_id']})" if info.get("run_id") else "")
            + (f", since {info['since']}" if info.get("since") else "")
        )
    elif info:
        holder = (
            f"another process (not the advertised writer, process {info.get('pid')}, which has ended; "
            f"perhaps a reader such as `cnnprov runs`, or a process that opened the store itself)"
        )
    else:
        holder = "another process"
    return (
        f"the provenance store '{target}' is in use by {holder}. An embedded store has one "
        f"writer at a time: wait for that run to finish, or log this run to another store "
        f"(ProvLogger(store='other-dir')) and merge later with `cnnprov export`."
    )


def _check_writable_location(target: Path) -> None:
    if target.exists() and not target.is_dir():
        raise StoreError(
            f"cannot use '{target}' as a provenance store: it is a file, not a directory. "
            f"Choose a directory path, e.g. ProvLogger(store='provenance')"
        )
    if target.is_dir() and any(target.iterdir()) and not is_store(target):
        raise StoreError(
            f"cannot use '{target}' as a provenance store: the directory holds other files. "
            f"Choose an empty or new directory"
        )
    existing = target if target.exists() else _nearest_existing_parent(target)
    if not existing.is_dir():
        raise StoreError(
            f"cannot create the provenance store at '{target}': '{existing}' is a file, not a "
            f"directory. Choose a path whose parent directories are directories"
        )
    if not os.access(existing, os.W_OK):
        raise StoreError(
            f"cannot create or write the provenance store at '{target}': '{existing}' is not "
            f"writable. Choose a directory you can write to"
        )


def _nearest_existing_parent(target: Path) -> Path:
    for parent in target.absolute().parents:
        if parent.exists():
            return parent
    return Path("/")


def _read_writer(target: Path) -> dict | None:
    try:
        return json.loads((target / _WRITER_FILE).read_text())
    except (OSError, ValueError):
        return None
