"""Opening an embedded store's directory: the checks, the wait for its lock, and clear errors.

RocksDB lets one process open a store for writing at a time; an open that finds it held waits a
moment (a run about to let go), then says who holds it (:mod:`cnnprov.storage.advertisement`).
Reads open it read-only (:func:`open_read_only`) when no process holds it (:func:`is_locked`):
they take no lock and leave no files, so they work on read-only media and for other users.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyoxigraph as ox

from cnnprov.errors import StoreError, StoreLockedError, StoreNotFoundError, StoreOpenInThisProcessError
from cnnprov.storage.advertisement import read_holder

_ROCKSDB_MARKER = "CURRENT"


def is_store(path: Path) -> bool:
    """Whether ``path`` is a directory an embedded store has written."""
    return (path / _ROCKSDB_MARKER).is_file()


def prepare_store_directory(target: Path) -> Path:
    """Check that ``target`` can be a store and create its directory; the checks that need no lock."""
    _check_writable_location(target)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StoreError(
            f"cannot create the provenance store directory '{target}': {error.strerror or error}. "
            f"Choose a directory you can write to"
        ) from None
    return target


def check_readable(target: Path) -> None:
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


def open_store(target: Path, wait_s: float) -> ox.Store:
    """Open the store at ``target``, waiting up to ``wait_s`` for another process to let go of it."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return ox.Store(str(target))
        except RuntimeError as error:  # RocksDB's "Corruption: …"
            raise StoreError(
                f"cannot open the provenance store at '{target}': {error}. Record this run to another "
                f"store (ProvLogger(store='other-dir')); `cnnprov export --store {target}` writes out what "
                f"can still be read"
            ) from error
        except OSError as error:
            if not _is_lock_error(error):
                raise StoreError(f"cannot open the provenance store at '{target}': {error}") from error
            if "current process" in str(error):
                raise StoreOpenInThisProcessError(in_this_process_message(target)) from None
            if time.monotonic() >= deadline:
                raise StoreLockedError(_locked_message(target)) from None
            time.sleep(0.05)


def _is_lock_error(error: OSError) -> bool:
    text = str(error)
    return "LOCK" in text and ("lock" in text.lower())


def in_this_process_message(target: Path) -> str:
    return (
        f"this process already has the provenance store '{target}' open (a ProvLogger whose run has "
        f"not finished, a session not closed, or an rdflib dataset from ProvStore.dataset() not yet "
        f"closed): close it first, record with store=<the session>, or read through the same "
        f"ProvStore inside `with ProvStore(...) as store:`"
    )


def open_read_only(target: Path) -> ox.Store:
    """The store at ``target``, opened to be read: no lock taken, nothing written. Call it when
    :func:`is_locked` says no process holds the store (reading beside a writer is undefined)."""
    try:
        return ox.Store.read_only(str(target))
    except (OSError, RuntimeError) as error:
        raise StoreError(
            f"cannot read the provenance store at '{target}': {error}. If it is damaged, "
            f"`cnnprov export --store {target}` writes out what can still be read"
        ) from error


#: The kernel's table of file locks (Linux): reading it opens no file of the store.
_PROC_LOCKS = Path("/proc/locks")


def is_locked(target: Path) -> bool | None:
    """Whether a process holds the store at ``target`` open for writing (RocksDB's lock on its
    ``LOCK`` file); ``None`` when that cannot be told (no ``/proc/locks``, no ``LOCK`` file).

    Read from the kernel's lock table, matched by the file's device and inode: the ``LOCK`` file
    itself is never opened, since closing any descriptor of it would drop the POSIX locks this
    process holds on it (RocksDB's, when this process is the writer).
    """
    try:
        status = (target / "LOCK").stat()
        table = _PROC_LOCKS.read_text()
    except OSError:
        return None
    key = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    return any(key in line.split() for line in table.splitlines())


def locked_message(target: Path) -> str:
    return _locked_message(target)


def _locked_message(target: Path) -> str:
    holder = read_holder(target)
    if holder is not None and holder.alive is not False:
        who = holder.describe()
    elif holder is not None:
        who = (
            f"another process (not the advertised writer, process {holder.pid}, which has ended; "
            f"perhaps a reader such as `cnnprov runs`, or a process that opened the store itself)"
        )
    else:
        who = "another process"
    return (
        f"the provenance store '{target}' is in use by {who}. An embedded store has one "
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
